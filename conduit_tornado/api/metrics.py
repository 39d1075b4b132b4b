"""GET /metrics: the Prometheus exposition (metering/prometheus.py).

Open unless CONDUIT_METRICS_TOKEN is set; then only ``Authorization: Bearer <token>``
reads it (compared in constant time). With CONDUIT_METRICS_PORT set it is served on that
port alone, by a listener serving nothing else (gateway.py), so the public port can stay
public while the metrics stay on an internal one.
"""

from __future__ import annotations

import hashlib
import hmac

from conduit_tornado.core.errors import ApiError, invalid_api_key
from conduit_tornado.metering import prometheus

from .base import PublicHandler

#: Application setting marking the metrics port's own application.
METRICS_LISTENER = "conduit_metrics_listener"


def token_matches(given: str | None, expected: str) -> bool:
    """Constant time whatever the lengths: both sides are hashed to one size first."""
    if given is None:
        return False
    a = hashlib.sha256(given.encode("utf-8", "surrogateescape")).digest()
    b = hashlib.sha256(expected.encode("utf-8", "surrogateescape")).digest()
    return hmac.compare_digest(a, b)


class PrometheusHandler(PublicHandler):
    """Public like the health checks, unless a metrics token is set."""

    async def authenticate(self) -> None:
        s = self.ctx.settings
        if s.metrics_port is not None and not self.settings.get(METRICS_LISTENER):
            raise ApiError(
                404,
                f"Unknown request URL: {self.request.method} {self.request.path}.",
                code="unknown_url",
            )  # served on CONDUIT_METRICS_PORT only
        if s.metrics_token is None:
            return
        header = self.request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        given = token.strip() if scheme.lower() == "bearer" and len(token) <= 1024 else None
        if not token_matches(given, s.metrics_token.get_secret_value()):
            error = invalid_api_key("A valid metrics token is required (CONDUIT_METRICS_TOKEN).")
            error.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
            raise error

    async def get(self) -> None:
        body = await prometheus.scrape()
        self.set_header("Content-Type", prometheus.CONTENT_TYPE)
        self.finish(body)
