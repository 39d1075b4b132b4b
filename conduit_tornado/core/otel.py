"""Tracing with the OpenTelemetry SDK: imported only when tracing is on (core/tracing.py).

Spans follow the semantic conventions: a SERVER span per request named as a GenAI
operation ("chat gpt-4o") once the request names a model (else "POST /v1/models"-style
HTTP names), CLIENT spans per upstream attempt and per store operation. Spans are handed
to a BatchSpanProcessor, which exports them from its own thread: ending a span on the
event loop only queues it. Attribute values are scrubbed (core/scrub.py); request and
answer text appear only with CONDUIT_OTEL_CAPTURE_CONTENT.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import orjson
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .scrub import scrub
from .settings import Settings
from .tracing import Span, current, outgoing

A = TypeVar("A")
B = TypeVar("B")
T = TypeVar("T")

#: gen_ai.operation.name per route (the conventions' names where one fits).
OPERATIONS = {
    "chat.completions": "chat",
    "responses": "chat",
    "messages": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
    "images.generations": "generate_content",
    "audio.speech": "generate_content",
    "audio.speech.stream": "generate_content",
    "audio.transcriptions": "generate_content",
    "audio.translations": "generate_content",
    "realtime": "realtime",  # a realtime session: one span from the upgrade to its close
}
#: gen_ai.provider.name per provider type (the conventions' well-known values).
PROVIDER_NAMES = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "ollama": "ollama",
    "mock": "mock",
}
#: Request parameters recorded as gen_ai.request.* (numbers and flags, never text).
REQUEST_PARAMS = {
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "max_output_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "n": "gen_ai.request.choice.count",
    "seed": "gen_ai.request.seed",
}
#: Captured content is cut at this many characters (a span is not a transcript store).
MAX_CONTENT = 16_384
_PROPAGATOR = TraceContextTextMapPropagator()


class OtelTracing:
    def __init__(self, settings: Settings, endpoint: str | None) -> None:
        name = settings.otel_service_name
        if "otel_service_name" not in settings.model_fields_set:
            name = os.environ.get("OTEL_SERVICE_NAME") or name
        # Resource.create also reads OTEL_RESOURCE_ATTRIBUTES; the sampler comes from
        # OTEL_TRACES_SAMPLER (default: parent-based, always on).
        self.provider = TracerProvider(resource=Resource.create({"service.name": name}))
        # endpoint None: the exporter reads the standard OTEL_EXPORTER_OTLP_* variables
        # (endpoint, headers, timeout, certificates) itself.
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        self.tracer = self.provider.get_tracer("conduit_tornado")
        self.capture = settings.otel_capture_content

    def start_request(
        self, method: str, path: str, headers: Mapping[str, str], started: float
    ) -> OtelRequest:
        parent = _PROPAGATOR.extract(headers) if "traceparent" in headers else None
        ago = time.perf_counter() - started
        span = self.tracer.start_span(
            f"{method} {path}",
            context=parent,
            kind=SpanKind.SERVER,
            start_time=time.time_ns() - int(ago * 1e9),
            attributes={
                "http.request.method": method,
                "url.path": scrub(path),
            },
        )
        return OtelRequest(self, span)

    def shutdown(self) -> None:
        self.provider.shutdown()


class OtelRequest:
    def __init__(self, tracing: OtelTracing, span: trace.Span) -> None:
        self._tracing = tracing
        self.span = span
        self._context = trace.set_span_in_context(span)
        self._provider: str | None = None
        self._operation: str | None = None
        self.task: asyncio.Task[Any] | None = None

    def enter(self) -> None:
        self.task = asyncio.current_task()
        current.set(self)

    @property
    def trace_id(self) -> str:
        return format(self.span.get_span_context().trace_id, "032x")

    def model_request(self, endpoint: str, model: str, body: Mapping[str, Any]) -> None:
        operation = OPERATIONS.get(endpoint, endpoint)
        self._operation = operation
        self.span.update_name(f"{operation} {model}")
        # One call with every attribute: the SDK takes a lock for each call.
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": model,
        }
        for field, attribute in REQUEST_PARAMS.items():
            value = body.get(field)
            if isinstance(value, int | float) and not isinstance(value, bool):
                attributes[attribute] = value
        if body.get("stream") is True:
            attributes["conduit.stream"] = True
        if self._tracing.capture:
            given = body.get("messages", body.get("input", body.get("prompt")))
            if given is not None:
                attributes["gen_ai.input.messages"] = _content(given)
        self.span.set_attributes(attributes)

    def model_answer(self, result: Mapping[str, Any]) -> None:
        if not self._tracing.capture:
            return
        answer = result.get("choices", result.get("output", result.get("content")))
        if answer is not None:
            self.span.set_attribute("gen_ai.output.messages", _content(answer))

    def attempts(self, call: Callable[[A, B], Awaitable[T]]) -> Callable[[A, B], Awaitable[T]]:
        tracer = self._tracing.tracer
        number = 0

        async def attempt(target: A, timeouts: B) -> T:
            nonlocal number
            number += 1
            provider: Any = getattr(target, "provider", None)
            kind = str(getattr(provider, "type", ""))
            name = str(getattr(provider, "name", ""))
            model = str(getattr(target, "model", ""))
            operation = self._operation or "call"
            self._provider = PROVIDER_NAMES.get(kind, kind)  # the last attempt's answers
            span = tracer.start_span(
                f"{operation} {model}",
                context=self._context,
                kind=SpanKind.CLIENT,
                attributes={
                    "gen_ai.operation.name": operation,
                    "gen_ai.provider.name": PROVIDER_NAMES.get(kind, kind),
                    "gen_ai.request.model": model,
                    "conduit.provider": name,
                    "conduit.attempt": number,
                },
            )
            carrier: dict[str, str] = {}
            _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
            token = outgoing.set(carrier)
            try:
                return await call(target, timeouts)
            except BaseException as exc:
                self.failed(span, exc)
                raise
            finally:
                outgoing.reset(token)
                span.end()

        return attempt

    def store_call(self, operation: str, collection: str, system: str) -> Span:
        return self._tracing.tracer.start_span(
            f"{operation} {collection}",
            context=self._context,
            kind=SpanKind.CLIENT,
            attributes={
                "db.system.name": system,
                "db.operation.name": operation,
                "db.collection.name": collection,
            },
        )

    def failed(self, span: Span, exc: BaseException) -> None:
        # The type and the provider's failure class only: an exception's text may quote
        # what a provider said, and providers have been known to echo credentials.
        kind = getattr(exc, "kind", None)
        error = kind if isinstance(kind, str) else type(exc).__name__
        span.set_attribute("error.type", error)
        status = getattr(exc, "status", None)
        if isinstance(status, int) and status:
            span.set_attribute("http.response.status_code", status)
        if isinstance(span, trace.Span):
            span.set_status(Status(StatusCode.ERROR, error))

    def finish(
        self,
        status: int,
        route: str,
        entry: Mapping[str, Any] | None,
        response_model: str | None,
    ) -> None:
        attributes: dict[str, Any] = {"http.route": route, "http.response.status_code": status}
        if self._provider is not None:
            attributes["gen_ai.provider.name"] = self._provider
        if entry is not None:
            _accounting(attributes, entry, response_model)
        if status >= 400:
            error = entry.get("error_code") or entry.get("error_type") if entry else None
            attributes["error.type"] = str(error or status)
        span = self.span
        span.set_attributes(attributes)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()


def _accounting(
    attributes: dict[str, Any], entry: Mapping[str, Any], response_model: str | None
) -> None:
    for field, attribute in (
        ("request_id", "conduit.request_id"),
        ("key_id", "conduit.key_id"),
        ("provider", "conduit.provider"),
        ("deployment", "conduit.deployment"),
    ):
        value = entry.get(field)
        if value:
            attributes[attribute] = str(value)
    model = response_model or entry.get("deployment")
    if model:
        attributes["gen_ai.response.model"] = str(model)
    for field, attribute in (
        ("prompt_tokens", "gen_ai.usage.input_tokens"),
        ("completion_tokens", "gen_ai.usage.output_tokens"),
        ("attempts", "conduit.attempts"),
    ):
        value = entry.get(field)
        if isinstance(value, int):
            attributes[attribute] = value
    for field, attribute in (
        ("cost", "conduit.cost_usd"),
        ("latency_ms", "conduit.latency_ms"),
        ("overhead_ms", "conduit.overhead_ms"),
    ):
        value = entry.get(field)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attributes[attribute] = float(value)


def _content(value: Any) -> str:
    text = orjson.dumps(value, default=str).decode()
    return scrub(text[:MAX_CONTENT])
