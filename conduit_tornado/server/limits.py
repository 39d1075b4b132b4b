"""What every client connection is held to, whichever HTTP server runs (ours or Tornado's)."""

from __future__ import annotations

import dataclasses
import logging
import resource

from conduit_tornado.core.settings import Settings

from .forwarded import allow_list

log = logging.getLogger("conduit.http")

MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class ServerLimits:
    """Defaults match core/settings.py; tests set small ones."""

    max_body_size: int = 100 * MIB  # the hard cap: past it the connection is dropped
    header_timeout: float = 10.0  # first byte of a request's head to its end
    body_timeout: float = 30.0  # longest silence while a request's body is awaited
    write_timeout: float = 60.0  # longest wait for a client to take our bytes
    keepalive_timeout: float = 30.0  # idle between requests
    max_connections: int = 1000
    forwarded_allow_ips: str = ""

    @classmethod
    def from_settings(cls, s: Settings) -> ServerLimits:
        return cls(
            # Handlers raise it for their own request (api/base.py's hard cap).
            max_body_size=max(s.max_request_bytes, s.max_admin_request_bytes),
            header_timeout=s.header_timeout,
            body_timeout=s.body_timeout,
            write_timeout=s.write_timeout,
            keepalive_timeout=s.keepalive_timeout,
            max_connections=s.max_connections,
            forwarded_allow_ips=allow_list(s.forwarded_allow_ips, s.trust_proxy_headers),
        )

    def connection_cap(self) -> int:
        """max_connections, lowered to fit the process's open-file limit: past that limit
        accept() fails (EMFILE) and nobody gets an answer, health checks included, while a
        503 tells the client what happened. A share of descriptors stays for everything
        else (store, provider connections, files)."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        reserve = max(32, soft // 4)
        cap = max(1, min(self.max_connections, soft - reserve))
        if cap < self.max_connections:
            log.info(
                "serving at most %d connections (max_connections %d; open-file limit %d)",
                cap,
                self.max_connections,
                soft,
            )
        return cap
