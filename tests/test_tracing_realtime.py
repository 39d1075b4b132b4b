"""Tracing of realtime sessions: one SERVER span per WebSocket session, from the upgrade to
its close, named as the GenAI operation "realtime", with the session's usage when it ends,
the connect to the provider as a CLIENT child, and the client's trace carried to the
provider's socket. Never the session's text or audio. Spans reach an OTLP/HTTP receiver on
loopback (tests/fakes/otlp.py); the provider is the fake realtime socket."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from conduit_tornado import AdminClient, Gateway
from tests.conftest import MASTER_KEY, GatewayFactory
from tests.fakes.otlp import CLIENT, SERVER, OtlpReceiver, ReceivedSpan
from tests.fakes.providers import API_KEY
from tests.fakes.realtime import USAGE, FakeRealtime
from tests.test_tracing import traceparent

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    r = OtlpReceiver()
    await r.start()
    yield r
    await r.stop()


@pytest_asyncio.fixture
async def upstream() -> AsyncIterator[FakeRealtime]:
    fake = FakeRealtime()
    await fake.start()
    yield fake
    await fake.stop()


async def gateway_for(
    start_gateway: GatewayFactory, fake: FakeRealtime, **settings: Any
) -> tuple[Gateway, str]:
    """A gateway with the model "rt" on the fake's OpenAI socket, and a key for it."""
    gw = await start_gateway(**settings)
    async with AdminClient(gw.url, MASTER_KEY) as admin:
        await admin.create_provider(
            name="oai", type="openai", base_url=fake.url + "/v1", api_key=API_KEY
        )
        await admin.create_model(
            name="rt", deployments=[{"provider": "oai", "model": "gpt-realtime"}]
        )
        created = await admin.create_key(name="rt-key")
    return gw, str(created["key"])


async def until(ws: ClientConnection, kind: str) -> None:
    while json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] != kind:
        pass


def session_span(receiver: OtlpReceiver, trace_id: str) -> ReceivedSpan:
    found = [s for s in receiver.spans if s.kind == SERVER and s.trace_id == trace_id]
    assert len(found) == 1, [(s.name, s.trace_id) for s in receiver.spans]
    return found[0]


async def test_a_realtime_session_is_one_genai_span_with_its_usage(
    start_gateway: GatewayFactory, upstream: FakeRealtime, receiver: OtlpReceiver
) -> None:
    # Content capture on, and still no text or audio of the session in any span.
    gw, key = await gateway_for(
        start_gateway, upstream, otel_endpoint=receiver.url, otel_capture_content=True
    )
    words = "purple-elephant-" + secrets.token_hex(4)
    audio = base64.b64encode(secrets.token_bytes(1200)).decode()
    header, trace_id, client_span = traceparent()
    async with connect(
        f"ws://127.0.0.1:{gw.port}/v1/realtime?model=rt",
        additional_headers={"Authorization": f"Bearer {key}", "traceparent": header},
    ) as ws:
        await until(ws, "session.created")
        await ws.send(json.dumps({"type": "session.update", "session": {"instructions": words}}))
        await until(ws, "session.updated")
        for _ in range(2):  # two responses: the span has the session's totals
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
            await ws.send(json.dumps({"type": "response.create"}))
            await until(ws, "response.done")
    await gw.stop()  # ends the session (if the close is still on its way) and exports

    span = session_span(receiver, trace_id)
    assert span.name == "realtime rt"
    assert span.parent_span_id == client_span  # the client's span is its parent
    a = span.attributes
    assert a["gen_ai.operation.name"] == "realtime"
    assert a["gen_ai.request.model"] == "rt"
    assert a["gen_ai.response.model"] == "gpt-realtime"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.usage.input_tokens"] == 2 * USAGE["input_tokens"]
    assert a["gen_ai.usage.output_tokens"] == 2 * USAGE["output_tokens"]
    assert a["conduit.cost_usd"] > 0 and a["conduit.provider"] == "oai"
    assert a["http.route"] == "realtime" and a["http.response.status_code"] == 101
    assert a["url.path"] == "/v1/realtime" and "error.type" not in a
    # The connect to the provider: a CLIENT child, whose context the provider's socket
    # received as traceparent on its upgrade request.
    (attempt,) = [s for s in receiver.children(span) if "conduit.attempt" in s.attributes]
    assert attempt.kind == CLIENT and attempt.name == "realtime gpt-realtime"
    assert attempt.attributes["gen_ai.provider.name"] == "openai"
    assert attempt.status_code != 2
    (conn,) = upstream.conns
    assert conn.headers["traceparent"] == f"00-{trace_id}-{attempt.span_id}-01"
    everything = receiver.everything()
    assert words not in everything and audio[:40] not in everything
    assert API_KEY not in everything and key not in everything


async def test_a_refused_upgrade_is_a_span_that_says_why(
    start_gateway: GatewayFactory, upstream: FakeRealtime, receiver: OtlpReceiver
) -> None:
    gw, key = await gateway_for(start_gateway, upstream, otel_endpoint=receiver.url)
    refused = {}
    for model, token in (("no-such-model", key), ("rt", "condt_not-a-key")):
        header, trace_id, _ = traceparent()
        with pytest.raises(InvalidStatus) as caught:
            async with connect(
                f"ws://127.0.0.1:{gw.port}/v1/realtime?model={model}",
                additional_headers={"Authorization": f"Bearer {token}", "traceparent": header},
            ):
                pass
        refused[trace_id] = caught.value.response.status_code
    await gw.stop()
    assert upstream.conns == []
    spans = {t: session_span(receiver, t) for t in refused}
    assert sorted(refused.values()) == [401, 404]
    for trace_id, span in spans.items():
        a = span.attributes
        assert a["http.response.status_code"] == refused[trace_id]
        assert a["error.type"] == (
            "model_not_found" if refused[trace_id] == 404 else "invalid_api_key"
        )
        assert span.status_code != 2  # the client's error, not the server's failure
        assert not [s for s in receiver.children(span) if "conduit.attempt" in s.attributes]


async def test_with_tracing_off_a_session_sends_no_span_and_no_traceparent(
    start_gateway: GatewayFactory, upstream: FakeRealtime, receiver: OtlpReceiver
) -> None:
    gw, key = await gateway_for(start_gateway, upstream)
    assert gw.ctx is not None and gw.ctx.tracing is None
    header, _, _ = traceparent()
    async with connect(
        f"ws://127.0.0.1:{gw.port}/v1/realtime?model=rt",
        additional_headers={"Authorization": f"Bearer {key}", "traceparent": header},
    ) as ws:
        await until(ws, "session.created")
    (conn,) = upstream.conns
    assert "traceparent" not in conn.headers
    await gw.stop()
    assert receiver.exports == 0


async def test_a_webrtc_call_and_a_clients_sideband_carry_the_trace(
    start_gateway: GatewayFactory, upstream: FakeRealtime, receiver: OtlpReceiver
) -> None:
    gw, key = await gateway_for(start_gateway, upstream, otel_endpoint=receiver.url)
    header, trace_id, _ = traceparent()
    offer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 RTP/SAVPF 111\r\n"
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx2.AsyncClient(base_url=gw.url, timeout=30) as http:
        created = await http.post(
            "/v1/realtime/calls",
            files={"sdp": (None, offer), "session": (None, '{"type":"realtime","model":"rt"}')},
            headers={**auth, "traceparent": header},
        )
        assert created.status_code == 201, created.text
        call_id = created.headers["location"].rsplit("/", 1)[1]
        # The client's own sideband of the call: a realtime session span of its own.
        band_header, band_trace, _ = traceparent()
        async with connect(
            f"ws://127.0.0.1:{gw.port}/v1/realtime?call_id={call_id}",
            additional_headers={**auth, "traceparent": band_header},
        ) as ws:
            await until(ws, "session.created")
        hangup = await http.post(f"/v1/realtime/calls/{call_id}/hangup", headers=auth)
        assert hangup.status_code == 200
    await gw.stop()
    (call,) = upstream.calls.values()
    ours, clients = upstream.conns  # the gateway's sideband, then the client's
    span = session_span(receiver, trace_id)
    (attempt,) = [s for s in receiver.children(span) if "conduit.attempt" in s.attributes]
    # The offer and the gateway's own sideband socket were both made in the attempt.
    carried = f"00-{trace_id}-{attempt.span_id}-01"
    assert call.headers["traceparent"] == carried == ours.headers["traceparent"]
    band = session_span(receiver, band_trace)
    assert band.name == "realtime rt" and band.attributes["gen_ai.provider.name"] == "openai"
    (connected,) = [s for s in receiver.children(band) if "conduit.attempt" in s.attributes]
    assert clients.headers["traceparent"] == f"00-{band_trace}-{connected.span_id}-01"
