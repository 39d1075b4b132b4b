"""The Responses API's WebSocket mode: ``client.responses.connect()`` at /v1/responses, on
every provider type, metered and stored like POST /v1/responses."""

from __future__ import annotations

import asyncio
import json
import platform
from typing import Any

import httpx2
import openai
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from conduit_tornado import Gateway
from tests.conftest import settled
from tests.fakes.providers import PROMPT_TOKENS
from tests.openai_schemas import validate
from tests.proxy_setup import CHAT_MODELS, Wired
from tests.test_responses import _native

pytestmark = pytest.mark.asyncio
# The SDK's connect() reads the platform on the event loop, where its first read runs a
# subprocess (uname -p): read it once here, at import.
platform.platform()


async def _logs(gw: Gateway) -> list[dict[str, Any]]:
    assert gw.ctx is not None
    await gw.ctx.recorder.flush()
    return await gw.ctx.store.find("request_logs", {"endpoint": "responses"})


async def _until_done(conn: Any) -> list[Any]:
    events = []
    async for event in conn:
        events.append(event)
        if event.type in ("response.completed", "response.failed", "response.incomplete"):
            return events
        if event.type == "error":
            return events
    raise AssertionError("the socket closed before the response was done")


@pytest.mark.parametrize("model", [*CHAT_MODELS, "mock", "gpt-native"])
async def test_connect_answers_each_create_with_the_stream_events(wired: Wired, model: str) -> None:
    await _native(wired)
    async with wired.client() as client, client.responses.connect() as conn:
        await conn.response.create(model=model, input="Say hello", instructions="Be brief.")
        first = await _until_done(conn)
        kinds = [e.type for e in first]
        assert kinds[:2] == ["response.created", "response.in_progress"]
        assert kinds[-1] == "response.completed"
        for event in first:
            data = event.model_dump(mode="json", exclude_unset=True, by_alias=True)
            data.pop("stream_id", None)
            validate(data, "ResponseStreamEvent")
        done = first[-1].response
        assert done.model == model and done.id.startswith("resp_")
        text = "".join(e.delta for e in first if e.type == "response.output_text.delta")
        assert text == done.output_text and text
        # A second turn on the same socket continues the first (stored, like HTTP).
        await conn.response.create(model=model, input="And again?", previous_response_id=done.id)
        second = await _until_done(conn)
        assert second[-1].type == "response.completed"
        assert second[-1].response.previous_response_id == done.id
    async with wired.client() as client:
        stored = await client.responses.retrieve(done.id)
    assert stored.status == "completed" and stored.output_text == done.output_text
    await settled(wired.gateway)
    logs = await _logs(wired.gateway)
    assert len(logs) == 2 and all(entry["status"] == 200 for entry in logs)
    assert all(entry["key_id"] == wired.key_id and entry["stream"] for entry in logs)
    if model != "mock":
        assert logs[0]["prompt_tokens"] == PROMPT_TOKENS and logs[0]["cost"] > 0


async def test_lanes_errors_and_the_http_fallback(wired: Wired) -> None:
    url = f"ws://127.0.0.1:{wired.gateway.port}/v1/responses"
    auth = {"Authorization": f"Bearer {wired.key}"}
    async with connect(url, additional_headers=auth) as ws:

        async def send(event: dict[str, Any]) -> None:
            await ws.send(json.dumps(event))

        async def recv() -> dict[str, Any]:
            event: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
            return event

        await send({"type": "response.create", "model": "nope", "input": "x"})
        error = await recv()
        assert error["type"] == "error" and error["status"] == 404
        assert error["error"]["code"] == "model_not_found"
        await send({"type": "response.create", "model": "gpt", "background": True})
        assert (await recv())["error"]["param"] == "background"
        await send({"type": "response.steer", "input": [], "previous_response_id": "resp_x"})
        assert (await recv())["error"]["code"] == "unsupported_value"
        await ws.send("{not json")
        assert (await recv())["status"] == 400
        # Each event of a lane carries its stream_id; the socket goes on after errors.
        await send({"type": "response.create", "model": "mock", "input": "hi", "stream_id": "a"})
        events = []
        while not events or events[-1]["type"] != "response.completed":
            events.append(await recv())
        assert {e["stream_id"] for e in events} == {"a"}
    async with httpx2.AsyncClient(base_url=wired.gateway.url, headers=auth) as http:
        plain = await http.get("/v1/responses")
        assert plain.status_code == 426 and plain.headers["upgrade"] == "websocket"
        assert plain.json()["error"]["code"] == "upgrade_required"
        # POST on the same URL is the HTTP API, untouched.
        posted = await http.post("/v1/responses", json={"model": "mock", "input": "hi"})
        assert posted.status_code == 200
    for key, status in [("condt_wrong", 401), (None, 401)]:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, additional_headers=headers):
                pass
        assert refused.value.response.status_code == status


async def test_a_socket_closed_mid_turn_bills_what_was_made(wired: Wired) -> None:
    wired.fake.then(chunk_delay=0.2, text="one two three four five six seven eight")
    async with wired.client() as client:
        conn = await client.responses.connect().enter()
        await conn.response.create(model="gpt", input="Count")
        async for event in conn:
            if event.type == "response.output_text.delta":
                break
        await conn.close()
    for _ in range(100):
        logs = await _logs(wired.gateway)
        if logs:
            break
        await asyncio.sleep(0.05)
    (entry,) = logs
    assert entry["status"] == 499 and entry["error_code"] == "client_disconnected"
    await settled(wired.gateway)
    assert wired.gateway.ctx is not None
    assert wired.gateway.ctx.in_flight.background == 0


async def test_key_limits_apply_per_turn(wired: Wired) -> None:
    limited = (await wired.admin.create_key(name="one", allowed_models=["mock"]))["key"]
    async with (
        openai.AsyncOpenAI(
            base_url=wired.gateway.url + "/v1", api_key=limited, max_retries=0
        ) as client,
        client.responses.connect() as conn,
    ):
        await conn.response.create(model="gpt", input="x")
        (error,) = await _until_done(conn)
        assert error.type == "error" and error.status == 403
        await conn.response.create(model="mock", input="x")
        assert (await _until_done(conn))[-1].type == "response.completed"
