"""The Responses API's WebSocket mode: ``client.responses.connect()`` at /v1/responses, on
every provider type, metered and stored like POST /v1/responses."""

from __future__ import annotations

import asyncio
import contextlib
import json
import platform
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import openai
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from conduit_tornado import Gateway
from conduit_tornado.api.responses_socket import MAX_LANES
from tests.conftest import clear_of_minute_end, settled
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


_FINAL = ("response.completed", "response.failed", "response.incomplete", "error")


class _Socket:
    """A raw WebSocket at /v1/responses (the SDK's connect() sends no stream_id): events
    sent as JSON, and read per lane, those of other lanes set aside for their reader."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.aside: dict[str | None, list[dict[str, Any]]] = {}

    async def send(self, lane: str | None = None, **event: Any) -> None:
        event = {"type": "response.create", "model": "mock", **event}
        if lane is not None:
            event["stream_id"] = lane
        await self.ws.send(json.dumps(event))

    async def until(self, lane: str | None, kinds: tuple[str, ...] = _FINAL) -> dict[str, Any]:
        """The next event of ``lane`` of one of ``kinds`` (the lane's others are dropped)."""
        waiting = self.aside.setdefault(lane, [])
        while True:
            while waiting:
                event = waiting.pop(0)
                if event["type"] in kinds:
                    return event
            event = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
            self.aside.setdefault(event.get("stream_id"), []).append(event)

    async def turn(self, lane: str | None = None, **event: Any) -> dict[str, Any]:
        """Send a response.create and read its last event: the Response's end, or an error."""
        await self.send(lane, **event)
        return await self.until(lane)


@contextlib.asynccontextmanager
async def _socket(wired: Wired, key: str | None = None) -> AsyncIterator[_Socket]:
    url = f"ws://127.0.0.1:{wired.gateway.port}/v1/responses"
    auth = {"Authorization": f"Bearer {key or wired.key}"}
    async with connect(url, additional_headers=auth) as ws:
        yield _Socket(ws)


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
        # Not a boolean: refused as POST refuses it, not as unsupported.
        await send({"type": "response.create", "model": "mock", "background": "false"})
        wrong = await recv()
        assert wrong["status"] == 400 and wrong["error"]["param"] == "background"
        assert wrong["error"]["code"] == "invalid_type" and "boolean" in wrong["error"]["message"]
        await send({"type": "response.create", "model": "mock", "input": "x", "background": False})
        while (event := await recv())["type"] != "response.completed":
            assert event["type"] != "error", event
        await send({"type": "response.steer", "input": [], "previous_response_id": "resp_x"})
        assert (await recv())["error"]["code"] == "unsupported_value"
        await ws.send("{not json")
        assert (await recv())["status"] == 400
        await send({"type": "response.create", "model": "mock", "input": "x", "generate": "no"})
        refused = await recv()
        assert refused["status"] == 400 and refused["error"]["param"] == "generate"
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


def _said_in_order(body: dict[str, Any], *texts: str) -> bool:
    said = json.dumps(body)
    places = [said.find(text) for text in texts]
    return -1 not in places and places == sorted(places)


@pytest.mark.parametrize("model", ["claude", "gpt-native"])
async def test_store_false_responses_chain_on_their_own_socket(wired: Wired, model: str) -> None:
    await _native(wired)
    async with wired.client() as client:
        async with client.responses.connect() as conn:
            await conn.response.create(model=model, input="My name is Ada.", store=False)
            first = (await _until_done(conn))[-1].response
            await conn.response.create(
                model=model, input="What is my name?", previous_response_id=first.id, store=False
            )
            second = await _until_done(conn)
            assert second[-1].type == "response.completed", second[-1]
            assert second[-1].response.previous_response_id == first.id
            # The upstream got the whole conversation, from the socket's memory.
            upstream = wired.fake.requests[-1].body
            assert _said_in_order(upstream, "My name is Ada.", "Hello", "What is my name?")
            assert upstream.get("previous_response_id") is None  # nothing stored upstream
        with pytest.raises(openai.NotFoundError):  # nothing was stored
            await client.responses.retrieve(first.id)
        # Another socket of the same key, or HTTP, has no such response.
        async with client.responses.connect() as other:
            await other.response.create(model=model, input="x", previous_response_id=first.id)
            (error,) = await _until_done(other)
            assert error.type == "error" and error.status == 404
            assert error.error.code == "previous_response_not_found"
            assert error.error.param == "previous_response_id"
        with pytest.raises(openai.NotFoundError):
            await client.responses.create(model=model, input="x", previous_response_id=first.id)


async def test_each_lane_keeps_its_last_response_however_busy_the_others(wired: Wired) -> None:
    async with _socket(wired) as sock:
        said = await sock.turn("idle", model="gpt", input="My name is Ada.", store=False)
        idle = said["response"]["id"]
        busy: list[str] = []
        for n in range(MAX_LANES + 1):  # more turns than the socket has lanes
            previous = {"previous_response_id": busy[-1]} if busy else {}
            done = await sock.turn("busy", input=f"turn {n}", store=False, **previous)
            assert done["type"] == "response.completed", done
            busy.append(done["response"]["id"])
        # The idle lane's only response is still there to continue, with what it said.
        follow = await sock.turn(
            "idle", model="gpt", input="What is my name?", previous_response_id=idle, store=False
        )
        assert follow["type"] == "response.completed", follow
        assert _said_in_order(wired.fake.requests[-1].body, "My name is Ada.", "What is my")
        # A lane keeps its last only (the stored ones are in the store).
        gone = await sock.turn("busy", input="x", previous_response_id=busy[-2])
        assert gone["status"] == 404 and gone["error"]["code"] == "previous_response_not_found"
        # At most MAX_LANES lanes are kept: new lanes let go the one that kept longest ago.
        for n in range(MAX_LANES - 1):
            await sock.turn(f"new {n}", input="x", store=False)
        oldest = await sock.turn("busy", input="x", previous_response_id=busy[-1])
        assert oldest["status"] == 404
        kept = follow["response"]["id"]
        # Another lane may continue a lane's response (a fork).
        fork = await sock.turn("fork", input="x", previous_response_id=kept, store=False)
        assert fork["type"] == "response.completed", fork


async def test_a_socket_keeps_responses_only_for_its_key(wired: Wired) -> None:
    # A stored response of another key is no more reachable over a socket than over HTTP.
    other = (await wired.admin.create_key(name="other"))["key"]
    async with _socket(wired, other) as sock:
        theirs = (await sock.turn(input="mine"))["response"]["id"]
    async with _socket(wired) as sock:
        error = await sock.turn(input="x", previous_response_id=theirs)
        assert error["status"] == 404 and error["error"]["code"] == "previous_response_not_found"


@pytest.mark.parametrize("store", [True, False])
async def test_a_follow_up_of_a_turn_still_running_on_the_socket_is_told_so(
    wired: Wired, store: bool
) -> None:
    wired.fake.then(chunk_delay=0.2, text="one two three four five six")
    async with _socket(wired) as sock:
        await sock.send("a", model="gpt", input="Count", store=store)
        running = (await sock.until("a", ("response.created",)))["response"]["id"]
        early = await sock.turn("b", input="x", previous_response_id=running)
        assert early["type"] == "error" and early["status"] == 400, early
        assert early["error"]["param"] == "previous_response_id"
        assert early["error"]["code"] == "previous_response_in_progress"
        assert (await sock.until("a"))["type"] == "response.completed"
        later = await sock.turn("b", input="x", previous_response_id=running)
        assert later["type"] == "response.completed", later


async def test_warm_ups_are_admitted_by_the_keys_request_limits_and_budget(wired: Wired) -> None:
    await clear_of_minute_end()
    limited = await wired.admin.create_key(name="one a minute", rpm=1)
    async with openai.AsyncOpenAI(
        base_url=wired.gateway.url + "/v1", api_key=limited["key"], max_retries=0
    ) as client:
        conversation = (await client.conversations.create()).id
        async with _socket(wired, limited["key"]) as sock:
            warm = await sock.turn(input="one", generate=False, conversation=conversation)
            assert warm["type"] == "response.completed", warm
            refused = await sock.turn(input="two", generate=False, conversation=conversation)
            assert refused["status"] == 429 and refused["error"]["code"] == "rate_limit_exceeded"
        items = await client.conversations.items.list(conversation)
    assert [item.content[0].text for item in items.data] == ["one"]  # type: ignore[union-attr]
    assert wired.gateway.ctx is not None
    stored = await wired.gateway.ctx.store.find("responses", {"key": limited["id"]})
    assert [doc["_id"] for doc in stored] == [warm["response"]["id"]]
    # A key over its budget is refused a warm-up too; one within it pays nothing for it.
    tight = await wired.admin.create_key(name="tight", max_budget=0.00001)
    async with _socket(wired, tight["key"]) as sock:
        warm = await sock.turn(model="gpt", input="x", generate=False)
        assert warm["type"] == "response.completed", warm
        await settled(wired.gateway)
        assert (await wired.admin.get_key(tight["id"]))["spend"] == 0
        paid = await sock.turn(model="gpt", input="x")
        assert paid["type"] == "response.completed", paid
        broke = await sock.turn(model="gpt", input="x", generate=False)
        assert broke["status"] == 429 and broke["error"]["code"] == "budget_exceeded"


async def test_generate_false_prepares_a_response_without_a_model_call(wired: Wired) -> None:
    before = len(wired.fake.requests)
    async with wired.client() as client:
        async with client.responses.connect() as conn:
            await conn.response.create(
                model="claude",
                input="My name is Ada.",
                instructions="Be brief.",
                generate=False,
                store=False,
            )
            events = await _until_done(conn)
            assert [e.type for e in events] == ["response.created", "response.completed"]
            for event in events:
                validate(event.model_dump(mode="json", exclude_unset=True), "ResponseStreamEvent")
            warm = events[-1].response
            assert warm.status == "completed" and warm.output == []
            assert warm.instructions == "Be brief."
            assert warm.usage is not None and warm.usage.total_tokens == 0
            assert warm.usage.input_tokens == 0 and warm.usage.output_tokens == 0
            assert len(wired.fake.requests) == before  # no model call
            # The warm-up is what the next turn continues.
            await conn.response.create(
                model="claude", input="What is my name?", previous_response_id=warm.id
            )
            answered = await _until_done(conn)
            assert answered[-1].type == "response.completed"
            assert _said_in_order(wired.fake.requests[-1].body, "My name is Ada.", "What is my")
            # As for any follow-up, instructions are not inherited (the Response echoes them).
            assert "Be brief." not in json.dumps(wired.fake.requests[-1].body)
            # Stored (store true): read back with its input items; and with no input at all.
            await conn.response.create(model="claude", input="Kept", generate=False)
            kept = (await _until_done(conn))[-1].response
            await conn.response.create(model="claude", instructions="Tools only.", generate=False)
            bare = await _until_done(conn)
            assert bare[-1].type == "response.completed" and bare[-1].response.output == []
        assert len(wired.fake.requests) == before + 1
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(warm.id)
        again = await client.responses.retrieve(kept.id)
        assert again.status == "completed" and again.output == []
        items = await client.responses.input_items.list(kept.id)
        assert [item.type for item in items.data] == ["message"]
        follow = await client.responses.create(
            model="claude", input="And now?", previous_response_id=kept.id
        )
        assert follow.status == "completed"
    assert _said_in_order(wired.fake.requests[-1].body, "Kept", "And now?")
    await settled(wired.gateway)
    logs = await _logs(wired.gateway)
    warmups = [entry for entry in logs if not entry.get("provider")]
    assert len(logs) == 5 and len(warmups) == 3
    for entry in warmups:  # logged, billed nothing
        assert entry["status"] == 200 and entry["total_tokens"] == 0 and entry["cost"] == 0
