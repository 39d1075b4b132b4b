"""A finished request, told once: its span ends and its access line is written.

BaseHandler calls ``request_done`` from on_finish; model-calling routes call it from
ProxyHandler.done() with the request-log entry, which runs later for a stream whose
client left (it is then logged as 499) and for background responses.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from conduit_tornado.core.scrub import scrub_uri
from conduit_tornado.metering import access_log

if TYPE_CHECKING:
    from .base import BaseHandler


def request_done(handler: BaseHandler, entry: Mapping[str, Any] | None) -> None:
    trace = handler.trace
    logged = access_log.enabled(handler.ctx.settings)
    if trace is None and not logged:
        return
    request = handler.request
    status = handler.get_status()
    if entry is not None and isinstance(entry.get("status"), int):
        status = entry["status"]
    route = getattr(handler, "endpoint", "") or request.path
    if trace is not None:
        reported = getattr(handler, "reported_model", None)
        trace.finish(status, route, entry, reported if isinstance(reported, str) else None)
    if not logged:
        return
    latency = entry.get("latency_ms") if entry is not None else None
    if not isinstance(latency, int | float):
        latency = (time.perf_counter() - handler.started) * 1000
    key = getattr(handler, "key", None)
    doc = getattr(key, "doc", None)
    prefix = doc.get("prefix") if isinstance(doc, dict) else None
    access_log.log_request(
        method=request.method or "",
        route=route,
        path=scrub_uri(request.uri or ""),
        status=status,
        latency_ms=float(latency),
        request_id=handler.request_id,
        key_id=getattr(key, "id", None),
        key_prefix=prefix if isinstance(prefix, str) else None,
        entry=entry,
        trace_id=trace.trace_id if trace is not None else None,
    )
