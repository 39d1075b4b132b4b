"""The one place outbound HTTP clients are configured: provider calls (upstream.py), budget
webhooks (metering/alerts.py) and, through ``ssl_context`` and ``env_proxy``, the realtime
WebSocket (realtime.py, which stays on aiohttp: pyreqwest has no WebSocket).

pyreqwest (Rust reqwest + hyper + rustls) does the HTTP. What it is told here, and why:

- Proxies come from ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY`` / ``NO_PROXY`` (reqwest
  reads them when a client is built; gateways behind egress proxies need nothing else).
- Trust is the system's store (rustls-platform-verifier); ``CONDUIT_CA_BUNDLE`` adds its
  certificates to it (a private CA for self-hosted models). A provider may present a client
  certificate (``options.client_cert`` and ``options.client_key``).
- Redirects are never followed: a 307 would make the client send a paid POST again.
- No cookies, no Referer: provider calls carry what the adapter sets and nothing else.
- Pool: ``upstream_pool_size`` idle connections per host, closed by hyper's background
  reaper after ``upstream_pool_idle`` seconds.

Retries inside the client: hyper-util resends a request only when the pooled connection it
was queued on closed before any byte of it was written (its ``retry_canceled_requests``);
reqwest 0.13's default retry policy only covers HTTP/2 protocol refusals, and HTTP/2 is off.
A request that was written, even partly, is never sent again here (tests/test_upstream_*).
"""

from __future__ import annotations

import hashlib
import os
import ssl
import tempfile
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pyreqwest.client import Client, ClientBuilder
from pyreqwest.exceptions import BuilderError

from conduit_tornado.core.settings import Settings

USER_AGENT = "conduit-tornado"
#: Provider options naming a client certificate and its private key: PEM text, or the path
#: of a PEM file on the gateway's host.
CLIENT_CERT = "client_cert"
CLIENT_KEY = "client_key"
MAX_PEM_BYTES = 256 * 1024  # a certificate chain or key file larger than this is a mistake

_CERT_MARK = b"-----BEGIN CERTIFICATE-----"
_KEY_MARKS = (b"-----BEGIN PRIVATE KEY-----", b"-----BEGIN RSA PRIVATE KEY-----",
              b"-----BEGIN EC PRIVATE KEY-----")  # fmt: skip


class ClientConfigError(ValueError):
    """An outbound client cannot be configured as asked (a bad CA bundle or client
    certificate); the message says which setting or option, never its content."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class Identity:
    """A client certificate chain and its private key, PEM."""

    cert: bytes
    key: bytes

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.key + b"\0" + self.cert).hexdigest()


def _pem(value: Any, option: str) -> bytes:
    if not isinstance(value, str) or not value.strip():
        raise ClientConfigError(f"options.{option} must be PEM text or a file path", option)
    if value.lstrip().startswith("-----BEGIN"):
        data = value.encode("ascii", "replace")
    else:
        path = Path(value)
        try:
            if path.stat().st_size > MAX_PEM_BYTES:
                raise ClientConfigError(f"options.{option} names a file that is too large", option)
            data = path.read_bytes()
        except OSError:
            raise ClientConfigError(
                f"options.{option} names a file that cannot be read", option
            ) from None
    if len(data) > MAX_PEM_BYTES:
        raise ClientConfigError(f"options.{option} is too large", option)
    return data


def client_identity(options: Mapping[str, Any]) -> Identity | None:
    """The client certificate a provider's options ask for, checked; None if none.
    Raises ClientConfigError naming the option at fault."""
    cert, key = options.get(CLIENT_CERT), options.get(CLIENT_KEY)
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        missing = CLIENT_KEY if key is None else CLIENT_CERT
        raise ClientConfigError(
            f"options.{CLIENT_CERT} and options.{CLIENT_KEY} go together; "
            f"options.{missing} is missing",
            missing,
        )
    cert_pem, key_pem = _pem(cert, CLIENT_CERT), _pem(key, CLIENT_KEY)
    if _CERT_MARK not in cert_pem:
        raise ClientConfigError(f"options.{CLIENT_CERT} holds no PEM certificate", CLIENT_CERT)
    if not any(mark in key_pem for mark in _KEY_MARKS):
        raise ClientConfigError(f"options.{CLIENT_KEY} holds no PEM private key", CLIENT_KEY)
    identity = Identity(cert_pem, key_pem)
    try:  # rustls parses both now, so a pair that does not load fails here, not per call
        ClientBuilder().identity_pem(identity.key + b"\n" + identity.cert)
    except (BuilderError, ValueError):
        raise ClientConfigError(
            f"options.{CLIENT_CERT} and options.{CLIENT_KEY} do not load as a certificate "
            "and its key",
            CLIENT_CERT,
        ) from None
    return identity


def load_ca_bundle(path: Path | None) -> bytes | None:
    """The PEM bytes of CONDUIT_CA_BUNDLE, checked; None when unset."""
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError:
        raise ClientConfigError("CONDUIT_CA_BUNDLE names a file that cannot be read") from None
    if _CERT_MARK not in data:
        # reqwest silently skips what is not a certificate; an empty trust addition would
        # only show up later as TLS failures.
        raise ClientConfigError("CONDUIT_CA_BUNDLE holds no PEM certificate")
    return data


class ClientFactory:
    """Builds every outbound HTTP client from the settings, so they share one
    configuration. Clients are built once per distinct (connect timeout, identity) and
    reused: the connection pool lives in the client."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ca_pem = load_ca_bundle(settings.ca_bundle)

    def builder(self, *, connect_timeout: float, identity: Identity | None = None) -> ClientBuilder:
        s = self.settings
        builder = (
            ClientBuilder()
            .follow_redirects(False)  # a followed 307 would send a paid POST twice
            .referer(False)
            .user_agent(USER_AGENT)
            .http1_only()
            .connect_timeout(timedelta(seconds=connect_timeout))
            .pool_idle_timeout(timedelta(seconds=s.upstream_pool_idle))
            .pool_max_idle_per_host(s.upstream_pool_size)
        )
        if self.ca_pem is not None:
            builder = builder.add_root_certificate_pem(self.ca_pem)
        if identity is not None:
            builder = builder.identity_pem(identity.key + b"\n" + identity.cert)
        return builder

    def client(self, *, connect_timeout: float, identity: Identity | None = None) -> Client:
        try:
            return self.builder(connect_timeout=connect_timeout, identity=identity).build()
        except (BuilderError, ValueError) as exc:
            raise ClientConfigError(f"the HTTP client cannot be built: {exc}") from None

    def ssl_context(self, identity: Identity | None = None) -> ssl.SSLContext | None:
        """The same trust and client certificate for libraries that take an SSLContext
        (aiohttp's WebSocket client); None when the library's default (the system's
        trust, no client certificate) is the same thing."""
        if self.ca_pem is None and identity is None:
            return None
        context = ssl.create_default_context()
        if self.ca_pem is not None:
            context.load_verify_locations(cadata=self.ca_pem.decode("ascii", "replace"))
        if identity is not None:
            # The ssl module loads a chain only from files: a private directory, removed
            # as soon as the context holds them.
            with tempfile.TemporaryDirectory(prefix="conduit-tls-") as tmp:
                cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
                cert.write_bytes(identity.cert)
                fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(identity.key)
                context.load_cert_chain(cert, key)
        return context


def env_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url`` (ws/wss map to http/https, as the
    WebSocket handshake is an HTTP request), honouring NO_PROXY; None to go direct."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(scheme) or proxies.get("all")
