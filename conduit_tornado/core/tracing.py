"""Tracing, as the rest of the gateway sees it: off (None) unless an OTLP endpoint is set.

The OpenTelemetry SDK is imported only when tracing is switched on (core/otel.py holds
everything that touches it), so a gateway without the ``otel`` extra, or with tracing
off, pays nothing: each hook in the request path is one ``is None`` check.

The request being traced travels in a context variable, as the Via chain does
(core/via.py): every request runs in a task of its own, so routing and the store find
the request's span without it being passed through every call. Each gateway holds its
own tracer provider (never OpenTelemetry's global one, which can be set once per
process), so several gateways, traced or not, can run in one process.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

from .settings import Settings

log = logging.getLogger("conduit.tracing")
A = TypeVar("A")
B = TypeVar("B")
T = TypeVar("T")

#: The traced request being served (None outside one, and always when tracing is off).
current: ContextVar[RequestTrace | None] = ContextVar("conduit_trace", default=None)
#: Headers an upstream call sends to carry the trace on (traceparent, tracestate): set
#: around each upstream attempt, read where upstream requests are built.
outgoing: ContextVar[Mapping[str, str] | None] = ContextVar("conduit_trace_out", default=None)
#: The standard variables that switch the OTLP trace exporter on.
STANDARD_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


class Span(Protocol):
    def set_attribute(self, key: str, value: Any) -> None: ...

    def end(self, end_time: int | None = None) -> None: ...


class RequestTrace(Protocol):
    """One request's SERVER span, and the children made while serving it."""

    #: The request's own task: store operations made by tasks it started (settlement
    #: batches, alerts, which serve many requests) are not this request's children.
    task: asyncio.Task[Any] | None

    def enter(self) -> None:
        """Make this the current request of the running task (called from prepare())."""

    @property
    def trace_id(self) -> str:
        """The W3C trace id, 32 hex digits (for the access log)."""

    def model_request(self, endpoint: str, model: str, body: Mapping[str, Any]) -> None:
        """The request names a model: the span becomes a GenAI span ("chat gpt-4o")."""

    def model_answer(self, result: Mapping[str, Any]) -> None:
        """A whole (not streamed) answer, recorded only when content capture is on."""

    def attempts(self, call: Callable[[A, B], Awaitable[T]]) -> Callable[[A, B], Awaitable[T]]:
        """``call`` (one try on a routing target) with a CLIENT span around each try."""

    def store_call(self, operation: str, collection: str, system: str) -> Span:
        """A CLIENT span for one store operation; the caller ends it."""

    def failed(self, span: Span, exc: BaseException) -> None:
        """Mark a child span failed by this exception (its type, never its text)."""

    def finish(
        self,
        status: int,
        route: str,
        entry: Mapping[str, Any] | None,
        response_model: str | None,
    ) -> None:
        """End the SERVER span with the answer's status and the request's accounting."""


class Tracing(Protocol):
    def start_request(
        self, method: str, path: str, headers: Mapping[str, str], started: float
    ) -> RequestTrace:
        """A SERVER span for a request whose head was parsed at ``started``
        (time.perf_counter), continuing the client's trace if it sent ``traceparent``."""

    def shutdown(self) -> None:
        """Export what is buffered and stop (blocks: call it off the event loop)."""


def open_tracing(settings: Settings) -> Tracing | None:
    """The gateway's tracer, or None when no endpoint is set (or the SDK is disabled)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    explicit = settings.otel_endpoint
    if not explicit and not any(os.environ.get(name) for name in STANDARD_ENDPOINTS):
        return None
    try:
        from .otel import OtelTracing
    except ImportError as exc:
        message = (
            "tracing is configured but OpenTelemetry is not installed "
            f"({exc.name}): pip install 'conduit-tornado[otel]'"
        )
        if explicit:
            raise ValueError(message) from None
        log.warning("%s; running without tracing", message)
        return None
    return OtelTracing(settings, traces_url(explicit) if explicit else None)


def traces_url(endpoint: str) -> str:
    """CONDUIT_OTEL_ENDPOINT is the collector's base URL, as OTEL_EXPORTER_OTLP_ENDPOINT
    is (``http://collector:4318``); the trace exporter posts to its /v1/traces."""
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/traces") else base + "/v1/traces"
