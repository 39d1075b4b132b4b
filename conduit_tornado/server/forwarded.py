"""Which proxies are believed about the client's address and scheme.

Proxy headers are a claim made by whoever connected. They are taken only from a peer in
``forwarded_allow_ips``; X-Forwarded-For is then walked from the right (each proxy
appends the address it saw), skipping addresses of trusted proxies, and the first one
that is not a trusted proxy is the client: anything further left was written by that
client and proves nothing. X-Real-Ip is never read (a client can send it through a proxy
that only appends to X-Forwarded-For). Both servers (ours and the Tornado fallback) use
this one implementation; handlers read the result as ``request.remote_ip`` and
``request.protocol``.
"""

from __future__ import annotations

import functools
import ipaddress
import logging

from tornado.httputil import HTTPHeaders

log = logging.getLogger("conduit.http")

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK = "127.0.0.1/8,::1"


class TrustedProxies:
    """Addresses and networks (``forwarded_allow_ips``: comma-separated, or '*')."""

    def __init__(self, spec: str) -> None:
        items = [item.strip() for item in spec.split(",") if item.strip()]
        self.everyone = "*" in items
        networks: list[_Network] = []
        for item in items:
            if item != "*":
                try:
                    networks.append(ipaddress.ip_network(item, strict=False))
                except ValueError:
                    raise ValueError(
                        f"forwarded_allow_ips: {item!r} is not an address, a CIDR or '*'"
                    ) from None
        self.networks = tuple(networks)
        # An lru_cache per instance: peers repeat (the proxy's few addresses).
        self.trusts = functools.lru_cache(maxsize=256)(self._trusts)

    def __bool__(self) -> bool:
        return self.everyone or bool(self.networks)

    def _trusts(self, address: str) -> bool:
        if self.everyone:
            return True
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)

    def resolve(self, peer: str, headers: HTTPHeaders) -> tuple[str, str | None]:
        """(client address, scheme or None) for a request that came from ``peer``."""
        if not self.trusts(peer):
            return peer, None
        client = peer
        hops = ",".join(headers.get_list("X-Forwarded-For")).split(",")
        for hop in reversed(hops):
            hop = hop.strip()
            if not hop:
                continue
            if not _is_ip(hop):
                break  # garbage written by someone: the last address we could read stands
            client = hop
            if not self.trusts(hop):
                break
        scheme = None
        proto = headers.get("X-Forwarded-Proto")
        if proto:
            last = proto.rsplit(",", 1)[-1].strip().lower()  # the nearest proxy's
            if last in ("http", "https"):
                scheme = last
        return client, scheme


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def allow_list(forwarded_allow_ips: str, trust_proxy_headers: bool) -> str:
    """The effective ``forwarded_allow_ips``. The older ``trust_proxy_headers`` believed
    any peer; it now means "a proxy on this machine" (loopback) and is deprecated."""
    if trust_proxy_headers:
        log.warning(
            "CONDUIT_TRUST_PROXY_HEADERS is deprecated: it now trusts proxy headers from "
            "loopback peers only. Set CONDUIT_FORWARDED_ALLOW_IPS to your proxies' "
            "addresses instead."
        )
        if not forwarded_allow_ips.strip():
            return LOOPBACK
    return forwarded_allow_ips
