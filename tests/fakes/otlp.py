"""An OTLP/HTTP trace receiver on loopback: what a collector would get from the gateway.

It accepts POST /v1/traces as the OTLP exporter sends it (protobuf, optionally gzipped),
decodes the ExportTraceServiceRequest with opentelemetry-proto and keeps every span with
its resource attributes, as plain values for assertions.
"""

from __future__ import annotations

import asyncio
import gzip
from dataclasses import dataclass, field
from typing import Any

import tornado.httpserver
import tornado.web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tests.fakes.base import Loopback

SERVER, CLIENT = 2, 3  # Span.SpanKind values in the OTLP protocol


@dataclass
class ReceivedSpan:
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    status_code: int  # 0 unset, 1 ok, 2 error


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return _attributes(v.kvlist_value.values)
    return getattr(v, which) if which else None


def _attributes(items: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kv: KeyValue
    for kv in items:
        out[kv.key] = _value(kv.value)
    return out


class _Traces(tornado.web.RequestHandler):
    def initialize(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver

    def check_xsrf_cookie(self) -> None:
        return None

    def post(self) -> None:
        body = self.request.body
        if self.request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.receiver.spans.append(
                        ReceivedSpan(
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes=_attributes(span.attributes),
                            resource=resource,
                            status_code=span.status.code,
                        )
                    )
        self.receiver.exports += 1
        self.receiver.arrived.set()
        self.set_header("Content-Type", "application/x-protobuf")
        self.finish(ExportTraceServiceResponse().SerializeToString())


@dataclass
class OtlpReceiver(Loopback):
    spans: list[ReceivedSpan] = field(default_factory=list)
    exports: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # set at each export
    server: tornado.httpserver.HTTPServer | None = None
    port: int = 0

    async def start(self) -> None:
        self.listen(tornado.web.Application([(r"/v1/traces", _Traces, {"receiver": self})]))

    async def trace_arrives(self, trace_id: str) -> None:
        """Until a span of this trace has arrived (callers bound the wait)."""
        while not any(s.trace_id == trace_id for s in self.spans):
            self.arrived.clear()
            await self.arrived.wait()

    def named(self, name: str) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.name == name]

    def children(self, parent: ReceivedSpan) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.parent_span_id == parent.span_id]

    def everything(self) -> str:
        """All span names and attribute values (resource included), as one text."""
        return "\n".join(f"{s.name} {s.attributes!r} {s.resource!r}" for s in self.spans)
