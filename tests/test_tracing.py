"""Tracing: spans reach an OTLP/HTTP receiver on loopback (tests/fakes/otlp.py), with the
GenAI attributes, a CLIENT child per upstream attempt and per store call, and the trace
carried from the client's traceparent through the gateway to the provider.

Each gateway holds its own tracer provider, so these run in the test process; one test
runs `conduit-tornado serve` as a process, configured by the standard OTEL_* variables."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import httpx2
import pytest

from conduit_tornado import AdminClient
from tests.conftest import MASTER_KEY
from tests.fakes.base import PROMPT_TOKENS
from tests.fakes.otlp import CLIENT, SERVER, OtlpReceiver, ReceivedSpan
from tests.fakes.providers import API_KEY, FakeProviders
from tests.proxy_setup import Wired, WiredFactory, wire
from tests.served import Served

pytestmark = pytest.mark.asyncio


def traceparent() -> tuple[str, str, str]:
    """A client's traceparent header, and its trace and span ids."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


async def chat(w: Wired, headers: dict[str, str], **body: object) -> httpx2.Response:
    async with httpx2.AsyncClient(base_url=w.gateway.url, timeout=30) as http:
        return await http.post(
            "/v1/chat/completions",
            json={"model": "gpt", "messages": [{"role": "user", "content": "hi"}], **body},
            headers={"Authorization": f"Bearer {w.key}", **headers},
        )


def server_span(receiver: OtlpReceiver, trace_id: str) -> ReceivedSpan:
    found = [s for s in receiver.spans if s.kind == SERVER and s.trace_id == trace_id]
    assert len(found) == 1, [(s.name, s.trace_id) for s in receiver.spans]
    return found[0]


async def test_a_chat_request_is_a_genai_span_continuing_the_clients_trace(
    wired_with: WiredFactory, receiver: OtlpReceiver, fake: FakeProviders
) -> None:
    w = await wired_with(otel_endpoint=receiver.url, retry_backoff=0.01)
    assert w.gateway.ctx is not None and w.gateway.ctx.tracing is not None
    header, trace_id, client_span = traceparent()
    fake.requests.clear()
    r = await chat(w, {"traceparent": header}, max_tokens=20)
    assert r.status_code == 200
    await w.gateway.stop()  # exports what the batch processor holds
    span = server_span(receiver, trace_id)
    assert span.name == "chat gpt"
    assert span.parent_span_id == client_span  # the client's span is its parent
    a = span.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "gpt"
    assert a["gen_ai.response.model"] == "gpt-4o"  # the model the provider says answered
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.usage.input_tokens"] == PROMPT_TOKENS
    assert a["gen_ai.usage.output_tokens"] == r.json()["usage"]["completion_tokens"] > 0
    assert a["gen_ai.request.max_tokens"] == 20
    assert a["http.request.method"] == "POST"
    assert a["http.response.status_code"] == 200
    assert a["http.route"] == "chat.completions"
    assert a["conduit.provider"] == "oai"
    assert a["conduit.request_id"] == r.headers["x-request-id"]
    assert span.resource["service.name"] == "conduit-tornado"
    # One attempt, a CLIENT child, whose context the provider received as traceparent.
    attempts = [s for s in receiver.children(span) if "gen_ai.provider.name" in s.attributes]
    assert len(attempts) == 1
    attempt = attempts[0]
    assert attempt.kind == CLIENT and attempt.name == "chat gpt-4o"
    assert attempt.attributes["gen_ai.request.model"] == "gpt-4o"
    assert attempt.attributes["conduit.attempt"] == 1
    (seen,) = fake.requests
    assert seen.headers["traceparent"] == f"00-{trace_id}-{attempt.span_id}-01"
    # The store calls made for the request (the key check at least) are children too.
    stores = [s for s in receiver.children(span) if "db.operation.name" in s.attributes]
    assert stores, [s.name for s in receiver.children(span)]
    assert all(s.kind == CLIENT and s.attributes["db.system.name"] == "memory" for s in stores)
    assert {s.attributes["db.collection.name"] for s in stores} & {"keys", "limits", "spend"}


async def test_each_upstream_attempt_is_a_span_and_a_failed_one_says_why(
    wired_with: WiredFactory, receiver: OtlpReceiver, fake: FakeProviders
) -> None:
    w = await wired_with(otel_endpoint=receiver.url, retry_backoff=0.01)
    header, trace_id, _ = traceparent()
    fake.requests.clear()
    fake.then(status=503)
    r = await chat(w, {"traceparent": header})
    assert r.status_code == 200 and r.headers["x-conduit-attempts"] == "2"
    await w.gateway.stop()
    span = server_span(receiver, trace_id)
    attempts = sorted(
        (s for s in receiver.children(span) if "conduit.attempt" in s.attributes),
        key=lambda s: s.attributes["conduit.attempt"],
    )
    assert [s.attributes["conduit.attempt"] for s in attempts] == [1, 2]
    assert attempts[0].status_code == 2 and attempts[0].attributes["error.type"] == "server"
    assert attempts[0].attributes["http.response.status_code"] == 503
    assert attempts[1].status_code != 2 and "error.type" not in attempts[1].attributes
    # Each try carried its own span's context to the provider.
    sent = [seen.headers["traceparent"] for seen in fake.requests]
    assert sent == [f"00-{trace_id}-{s.span_id}-01" for s in attempts]


async def test_a_stream_a_refusal_and_a_request_without_traceparent(
    wired_with: WiredFactory, receiver: OtlpReceiver
) -> None:
    w = await wired_with(otel_endpoint=receiver.url)
    header, trace_id, _ = traceparent()
    async with w.stream(
        {"model": "claude", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    ) as response:
        assert response.status_code == 200
        await response.aread()
    refused = await chat(w, {"traceparent": header}, model="no-such-model")
    assert refused.status_code == 404
    async with httpx2.AsyncClient(base_url=w.gateway.url) as http:
        assert (await http.get("/health/live")).status_code == 200
    await w.gateway.stop()
    streamed = receiver.named("chat claude")
    assert len(streamed) == 1 and streamed[0].kind == SERVER
    a = streamed[0].attributes
    assert a["gen_ai.provider.name"] == "anthropic" and a["conduit.stream"] is True
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert streamed[0].parent_span_id == ""  # no traceparent: a trace of its own
    missing = server_span(receiver, trace_id)
    assert missing.name == "chat no-such-model"
    assert missing.attributes["http.response.status_code"] == 404
    assert missing.attributes["error.type"] == "model_not_found"
    assert missing.status_code != 2  # a client's error is not the server's failure
    health = [s for s in receiver.spans if s.attributes.get("url.path") == "/health/live"]
    assert len(health) == 1 and health[0].name == "GET /health/live"


async def test_no_request_or_answer_text_in_spans_unless_capture_is_on(
    wired_with: WiredFactory, receiver: OtlpReceiver
) -> None:
    words = "purple-elephant-" + secrets.token_hex(4)
    plain = await wired_with(otel_endpoint=receiver.url)
    header, trace_id, _ = traceparent()
    assert (
        await chat(
            plain, {"traceparent": header}, user="u1", messages=[{"role": "user", "content": words}]
        )
    ).status_code == 200
    await plain.gateway.stop()
    span = server_span(receiver, trace_id)
    assert words not in receiver.everything() and "Hello from the fake" not in receiver.everything()
    assert "gen_ai.input.messages" not in span.attributes
    receiver.spans.clear()
    captured = await wired_with(otel_endpoint=receiver.url, otel_capture_content=True)
    header, trace_id, _ = traceparent()
    answer = await chat(
        captured, {"traceparent": header}, messages=[{"role": "user", "content": words}]
    )
    assert answer.status_code == 200
    await captured.gateway.stop()
    a = server_span(receiver, trace_id).attributes
    assert words in a["gen_ai.input.messages"]
    assert answer.json()["choices"][0]["message"]["content"] in a["gen_ai.output.messages"]


async def test_tracing_off_sends_nothing_and_adds_no_header_upstream(
    wired: Wired, receiver: OtlpReceiver, fake: FakeProviders
) -> None:
    assert wired.gateway.ctx is not None and wired.gateway.ctx.tracing is None
    header, _, _ = traceparent()
    fake.requests.clear()
    assert (await chat(wired, {"traceparent": header})).status_code == 200
    assert "traceparent" not in fake.requests[0].headers
    await wired.gateway.stop()
    assert receiver.exports == 0


async def test_serve_traces_to_the_standard_otlp_endpoint(
    receiver: OtlpReceiver, fake: FakeProviders, tmp_path: Path
) -> None:
    """A real `serve` process: OTEL_EXPORTER_OTLP_ENDPOINT switches tracing on, and
    OTEL_SERVICE_NAME names the service (the standard variables an operator sets)."""
    env = {
        "CONDUIT_STORE": "memory",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_SERVICE_NAME": "gateway-under-test",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export every 0.1 s, not every 5 s
    }
    served = await Served.start(tmp_path, env=env)
    try:
        async with AdminClient(served.url, MASTER_KEY) as admin:
            w = await wire(served, fake, admin)  # type: ignore[arg-type]
            header, trace_id, _ = traceparent()
            assert (await chat(w, {"traceparent": header})).status_code == 200
        await asyncio.wait_for(receiver.trace_arrives(trace_id), 20)
    finally:
        await served.stop()
    span = server_span(receiver, trace_id)
    assert span.name == "chat gpt" and span.resource["service.name"] == "gateway-under-test"
    assert fake.requests[-1].headers["traceparent"].split("-")[1] == trace_id
    assert API_KEY not in receiver.everything()
