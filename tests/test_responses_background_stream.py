"""Background responses that stream (background and stream true), read again from any
point with GET /v1/responses/{id}?stream=true&starting_after=N, with the official SDK."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest

from conduit_tornado.api.responses import packed, unpacked
from conduit_tornado.api.responses_stream import ENDING
from conduit_tornado.core.clock import Clock
from conduit_tornado.store import Doc, MemoryStore
from tests.conftest import settled
from tests.openai_schemas import validate
from tests.proxy_setup import Wired, WiredFactory
from tests.test_responses import _native

pytestmark = pytest.mark.asyncio
LONG = "one two three four five six seven eight nine ten"


def _data(event: Any) -> dict[str, Any]:
    data: dict[str, Any] = event.model_dump(mode="json", exclude_unset=True, by_alias=True)
    return data


async def _to_first_delta(client: Any) -> tuple[Any, list[Any]]:
    """A background stream started, and its events read up to the first text delta."""
    stream = await client.responses.create(model="gpt", input="Count", background=True, stream=True)
    seen = []
    async for event in stream:
        seen.append(event)
        if event.type == "response.output_text.delta":
            break
    return stream, seen


@pytest.mark.parametrize("model", ["gpt", "claude", "mock"])
async def test_a_background_stream_is_followed_and_replayed(wired: Wired, model: str) -> None:
    async with wired.client() as client:
        stream = await client.responses.create(
            model=model, input="Say hello", background=True, stream=True
        )
        events = [event async for event in stream]
        for event in events:
            validate(_data(event), "ResponseStreamEvent")
        assert [e.sequence_number for e in events] == list(range(len(events)))
        assert events[0].type == "response.created" and events[-1].type == "response.completed"
        done = events[-1].response
        assert done.background is True and done.status == "completed"
        stored = await client.responses.retrieve(done.id)
        assert stored.status == "completed" and stored.output_text == done.output_text
        # Replayed from after event 2: the same events, the same numbers.
        replay = await client.responses.retrieve(done.id, stream=True, starting_after=2)
        again = [event async for event in replay]
        assert [_data(e) for e in again] == [_data(e) for e in events[3:]]
        everything = await client.responses.retrieve(done.id, stream=True)
        assert len([e async for e in everything]) == len(events)
    await settled(wired.gateway)
    logs = (await wired.admin.logs())["data"]
    assert len([e for e in logs if e["endpoint"] == "responses"]) == 1  # one run, one log


async def test_the_run_goes_on_when_the_client_leaves(wired: Wired) -> None:
    wired.fake.then(chunk_delay=0.1, text=LONG)
    async with wired.client() as client:
        stream, seen = await _to_first_delta(client)
        await stream.close()  # the client leaves mid-stream
        response_id = seen[0].response.id
        assert (await client.responses.retrieve(response_id)).status == "in_progress"
        # Another reader resumes where the first one stopped, and sees the rest live.
        resumed = await client.responses.retrieve(
            response_id, stream=True, starting_after=seen[-1].sequence_number
        )
        rest = [event async for event in resumed]
        assert rest[0].sequence_number == seen[-1].sequence_number + 1
        assert rest[-1].type == "response.completed"
        text = "".join(e.delta for e in [*seen, *rest] if e.type == "response.output_text.delta")
        assert text == LONG
    await settled(wired.gateway)
    entry = (await wired.admin.logs())["data"][0]
    assert entry["status"] == 200 and entry["completion_tokens"] == 10  # billed in full


async def test_cancel_stops_a_streamed_run(wired: Wired) -> None:
    wired.fake.then(chunk_delay=0.2, text=LONG)
    async with wired.client() as client:
        stream = await client.responses.create(
            model="gpt", input="Count", background=True, stream=True
        )
        first = await stream.__anext__()
        cancelled = await client.responses.cancel(first.response.id)
        assert cancelled.status == "cancelled"
        async with asyncio.timeout(10):  # the follower sees the end
            async for _ in stream:
                pass
        assert (await client.responses.retrieve(first.response.id)).status == "cancelled"
    await settled(wired.gateway)
    entry = (await wired.admin.logs())["data"][0]
    assert entry["status"] == 499  # stopped mid-stream; what was made is billed
    assert entry["error_code"] == "cancelled"  # as a background run without stream logs it


async def test_refusals_come_back_as_http_errors_and_store_nothing(wired: Wired) -> None:
    auth = {"Authorization": f"Bearer {wired.key}"}
    async with httpx2.AsyncClient(base_url=wired.gateway.url, headers=auth) as http:
        nope = await http.post(
            "/v1/responses",
            json={"model": "nope", "input": "x", "background": True, "stream": True},
        )
        assert nope.status_code == 404 and nope.json()["error"]["code"] == "model_not_found"
        unstored = await http.post(
            "/v1/responses",
            json={"model": "gpt", "input": "x", "background": True, "stream": True, "store": False},
        )
        assert unstored.status_code == 400
        plain = (await http.post("/v1/responses", json={"model": "mock", "input": "x"})).json()
        again = await http.get(f"/v1/responses/{plain['id']}", params={"stream": "true"})
        assert again.status_code == 400 and again.json()["error"]["param"] == "stream"
        stranger = (await wired.admin.create_key(name="stranger"))["key"]
        made = await http.post(
            "/v1/responses",
            json={"model": "mock", "input": "x", "background": True, "stream": True},
        )
        first = json.loads(made.text.split("data: ", 2)[1].split("\n", 1)[0])
        theirs = await http.get(
            f"/v1/responses/{first['response']['id']}",
            params={"stream": "true"},
            headers={"Authorization": f"Bearer {stranger}"},
        )
        assert theirs.status_code == 404
    assert wired.gateway.ctx is not None
    stored = await wired.gateway.ctx.store.find("responses", {})
    assert [doc["_id"] for doc in stored if doc.get("events")] == [first["response"]["id"]]


async def test_the_event_log_on_every_store(wired_store: Wired) -> None:
    async with wired_store.client() as client:
        stream = await client.responses.create(
            model="gpt", input="Say hello", background=True, stream=True
        )
        events = [_data(event) async for event in stream]
        response_id = events[0]["response"]["id"]
        replay = await client.responses.retrieve(response_id, stream=True, starting_after=1)
        assert [_data(e) async for e in replay] == events[2:]
        last = await client.responses.retrieve(
            response_id, stream=True, starting_after=len(events) - 1
        )
        assert [e async for e in last] == []


@pytest.mark.parametrize("model", ["gpt", "gpt-native"])
async def test_a_background_stream_starts_queued(wired: Wired, model: str) -> None:
    """As the POST without stream answers, and as OpenAI streams it: created queued, then
    response.queued, then response.in_progress when it runs, numbered for replay."""
    await _native(wired)
    async with wired.client() as client:
        queued = await client.responses.create(model=model, input="Say hello", background=True)
        assert queued.status == "queued"
        stream = await client.responses.create(
            model=model, input="Say hello", background=True, stream=True
        )
        events = [event async for event in stream]
        for event in events:
            validate(_data(event), "ResponseStreamEvent")
        kinds = [(e.type, getattr(getattr(e, "response", None), "status", None)) for e in events]
        assert kinds[:3] == [
            ("response.created", "queued"),
            ("response.queued", "queued"),
            ("response.in_progress", "in_progress"),
        ]
        assert kinds[-1] == ("response.completed", "completed")
        assert [e.sequence_number for e in events] == list(range(len(events)))
        replay = await client.responses.retrieve(
            events[0].response.id, stream=True, starting_after=0
        )
        assert [_data(e) async for e in replay] == [_data(e) for e in events[1:]]


async def test_a_cancelled_stream_ends_with_what_was_made(wired: Wired) -> None:
    """A cancel mid-stream: the stream ends with the Response, cancelled, through the
    SDK's stream state; retrieved, it holds the text made so far and the billed usage."""
    wired.fake.then(chunk_delay=0.2, text=LONG)
    async with (
        wired.client() as client,
        client.responses.stream(model="gpt", input="Count", background=True) as stream,
    ):
        seen = []
        async for event in stream:
            seen.append(event)
            if event.type == "response.output_text.delta":
                cancelled = await client.responses.cancel(seen[0].response.id)
                break
        async with asyncio.timeout(10):
            rest = [event async for event in stream]
        events = [*seen, *rest]
        assert [e.sequence_number for e in events] == list(range(len(events)))
        last = events[-1]
        assert last.type == "response.completed" and last.response.status == "cancelled"
        done = [e for e in events if e.type == "response.output_item.done"]
        assert len(done) == 1 and done[0].item.status == "incomplete"
        made = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert made and LONG.startswith(made) and made != LONG
        assert last.response.output_text == made
        # The cancel answers what is stored: the same Response.
        assert cancelled.status == "cancelled" and cancelled.output_text == made
        stored = await client.responses.retrieve(last.response.id)
        assert stored.status == "cancelled" and stored.output_text == made
        assert stored.usage is not None and stored.usage.output_tokens > 0
        replay = await client.responses.retrieve(last.response.id, stream=True)
        end = [e async for e in replay][-1]
        assert end.type == "response.completed" and end.sequence_number == last.sequence_number
        assert end.response.status == "cancelled" and end.response.output_text == made
    await settled(wired.gateway)
    entry = (await wired.admin.logs())["data"][0]
    assert entry["status"] == 499
    assert entry["completion_tokens"] == stored.usage.output_tokens  # as billed
    # Its time went on waiting for the provider's events (one cut short by the cancel):
    # upstream time, not the gateway's overhead.
    assert entry["upstream_ms"] >= 200 and entry["overhead_ms"] < 100


async def _stored_run(wired: Wired) -> str:
    """The id of the streamed background run just started: no event carries it before
    the provider answers, but its document is stored as the run starts."""
    assert wired.gateway.ctx is not None
    for _ in range(250):
        docs = [d for d in await wired.gateway.ctx.store.find("responses", {}) if d.get("events")]
        if docs and wired.fake.requests:  # and the provider has been called
            return str(docs[0]["_id"])
        await asyncio.sleep(0.02)
    raise AssertionError("the run never started")


async def test_a_cancel_before_the_first_token_stops_the_run(wired: Wired) -> None:
    """A cancel while the provider is still being reached (connect, time to first token)
    stops the run at once: nothing streamed or billed, the stream is its start and the
    Response cancelled, and that is what is stored."""
    wired.fake.then(delay=30)  # the provider is slow to answer
    async with wired.client() as client:
        created = asyncio.ensure_future(
            client.responses.create(model="gpt", input="Count", background=True, stream=True)
        )
        response_id = await _stored_run(wired)
        started = time.monotonic()
        cancelled = await client.responses.cancel(response_id)
        assert time.monotonic() - started < ENDING  # stopped, not given up on
        assert cancelled.status == "cancelled" and cancelled.output == []
        async with asyncio.timeout(10):
            events = [event async for event in await created]
        for event in events:
            validate(_data(event), "ResponseStreamEvent")
        assert [e.sequence_number for e in events] == list(range(len(events)))
        assert [e.type for e in events] == [
            "response.created",
            "response.queued",
            "response.in_progress",
            "response.completed",
        ]
        assert events[-1].response.status == "cancelled" and events[-1].response.id == response_id
        assert (await client.responses.retrieve(response_id)).status == "cancelled"
    await settled(wired.gateway)
    entry = (await wired.admin.logs())["data"][0]
    assert entry["status"] == 499 and entry["error_code"] == "cancelled"
    assert not entry.get("completion_tokens") and not entry.get("cost")  # nothing made or billed


class _RemoteEvents(MemoryStore):
    """A store whose event log writes take as long as a remote database's can."""

    async def insert_many(self, collection: str, docs: Sequence[Doc]) -> None:
        if collection == "response_events":
            await asyncio.sleep(0.3)
        await super().insert_many(collection, docs)


async def test_a_second_cancel_leaves_the_first_to_end_the_run(wired_with: WiredFactory) -> None:
    """Two cancels: each answers the Response as the run ended it, with what it made (the
    second does not cut short the first one's ending, which writes its last events)."""
    wired = await wired_with(store=_RemoteEvents(), retry_backoff=0.01)
    wired.fake.then(chunk_delay=0.2, text=LONG)
    async with wired.client() as client:
        stream, seen = await _to_first_delta(client)
        response_id = seen[0].response.id
        first = asyncio.ensure_future(client.responses.cancel(response_id))
        await asyncio.sleep(0.1)  # the second comes while the first one's run is ending
        answers = [await client.responses.cancel(response_id), await first]
        async with asyncio.timeout(10):
            rest = [event async for event in stream]
        last = [*seen, *rest][-1]
        assert last.type == "response.completed" and last.response.status == "cancelled"
        made = last.response.output_text
        assert made and LONG.startswith(made)
        assert [(a.status, a.output_text) for a in answers] == [("cancelled", made)] * 2
        stored = await client.responses.retrieve(response_id)
        assert stored.status == "cancelled" and stored.output_text == made


@pytest.mark.parametrize("drop_after", [1, 5])
async def test_a_relayed_stream_that_fails_part_way_ends_failed(
    wired: Wired, drop_after: int
) -> None:
    """A native provider's stream cut part way (after its first event, or mid-text): the
    failure is numbered after the last relayed event, stored, billed, and followers end."""
    await _native(wired)
    wired.fake.then(drop_after=drop_after)
    async with wired.client() as client:
        stream = await client.responses.create(
            model="gpt-native", input="Say hello", background=True, stream=True
        )
        async with asyncio.timeout(10):
            events = [_data(event) async for event in stream]
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        assert events[-1]["type"] == "response.failed"
        response_id = events[0]["response"]["id"]
        stored = await client.responses.retrieve(response_id)
        assert stored.status == "failed" and stored.error is not None
        async with asyncio.timeout(10):
            replay = await client.responses.retrieve(response_id, stream=True)
            assert [_data(e) async for e in replay] == events
    await settled(wired.gateway)
    entry = (await wired.admin.logs())["data"][0]
    assert entry["status"] >= 500 and entry["provider"] == "oai-native"  # accounted


async def test_a_follower_stops_when_the_run_s_gateway_is_gone(wired: Wired) -> None:
    """A run in another gateway that dies without recording its end: its followers see
    it failed (as GET would), rather than wait for its events for ever."""
    assert wired.gateway.ctx is not None
    store = wired.gateway.ctx.store
    async with wired.client() as client:
        stream = await client.responses.create(
            model="gpt", input="Say hello", background=True, stream=True
        )
        events = [event async for event in stream]
        response_id = events[0].response.id
        # Made again in progress, by a gateway that is alive when the follower starts.
        doc = unpacked(await store.get("responses", response_id) or {})
        running = {**doc["response"], "status": "in_progress", "output": [], "usage": None}
        await store.insert("instances", {"_id": "inst_other", "seen": datetime.now(UTC)})
        await store.update(
            "responses",
            response_id,
            {"status": "in_progress", "runner": "inst_other", "response": packed(running)},
        )
        for event in await store.find("response_events", {"response": response_id}):
            if event["seq"] >= 3:  # its events from the text on are still to come
                await store.delete("response_events", event["_id"])
        follower = await client.responses.retrieve(response_id, stream=True, starting_after=1)
        assert (await follower.__anext__()).type == "response.in_progress"
        await store.delete("instances", "inst_other")  # that gateway is gone
        async with asyncio.timeout(10):
            rest = [_data(e) async for e in follower]
        stored = await client.responses.retrieve(response_id)
        assert stored.status == "failed" and stored.error is not None
        # The stream ends as the run's would have, numbered after the last stored event.
        assert [(e["type"], e["sequence_number"]) for e in rest] == [("response.failed", 3)]
        assert rest[0]["response"] == _data(stored)


async def test_a_replay_of_a_run_whose_gateway_died_ends_failed(wired: Wired) -> None:
    """A gateway killed mid-run, read again after: GET records the run failed, and its
    replay, from any point, is the stored events then response.failed with the stored
    Response, numbered after them, so a client's loop ends with the error."""
    assert wired.gateway.ctx is not None
    store = wired.gateway.ctx.store
    wired.fake.then(text=LONG)
    async with wired.client() as client:
        stream = await client.responses.create(
            model="gpt", input="Count", background=True, stream=True
        )
        events = [_data(event) async for event in stream]
        response_id = events[0]["response"]["id"]
        cut = next(i for i, e in enumerate(events) if e["type"] == "response.output_text.delta")
        cut += 2  # two deltas stored, then the gateway was killed
        # As the killed gateway left it: in progress (as its run stored it when it
        # started), run by an instance no longer seen.
        doc = unpacked(await store.get("responses", response_id) or {})
        ended = ("usage", "completed_at")
        running = {k: v for k, v in doc["response"].items() if k not in ended}
        running.update(status="in_progress", output=[])
        await store.update(
            "responses",
            response_id,
            {"status": "in_progress", "runner": "inst_killed", "response": packed(running)},
        )
        for event in await store.find("response_events", {"response": response_id}):
            if event["seq"] >= cut:
                await store.delete("response_events", event["_id"])
        async with asyncio.timeout(10):
            replay = await client.responses.retrieve(response_id, stream=True, starting_after=3)
            again = [_data(e) async for e in replay]
        stored = await client.responses.retrieve(response_id)
        assert stored.status == "failed" and stored.error is not None
        assert "stopped before it finished" in stored.error.message
        validate(again[-1], "ResponseStreamEvent")
        assert again[:-1] == events[4:cut]
        assert again[-1] == {
            "type": "response.failed",
            "sequence_number": cut,
            "response": _data(stored),
        }
        # From the last stored event on: only the end; from after the end: nothing.
        async with asyncio.timeout(10):
            tail = await client.responses.retrieve(response_id, stream=True, starting_after=cut - 1)
            assert [_data(e) async for e in tail] == again[-1:]
            past = await client.responses.retrieve(response_id, stream=True, starting_after=cut)
            assert [_data(e) async for e in past] == []


class _Ticking(Clock):
    """A millisecond on at every reading: no two readings are the same time."""

    def __init__(self) -> None:
        self._now = datetime.now(UTC)

    def now(self) -> datetime:
        self._now += timedelta(milliseconds=1)
        return self._now


async def test_stored_responses_date_from_their_request(wired_with: WiredFactory) -> None:
    """Whole, background and streamed background: each stored response's created_at is
    its request's, as the request log has it (retention reads it)."""
    wired = await wired_with(clock=_Ticking(), retry_backoff=0.01)
    async with wired.client() as client:
        await client.responses.create(model="gpt", input="hi")
        queued = await client.responses.create(model="gpt", input="hi", background=True)
        stream = await client.responses.create(
            model="gpt", input="hi", background=True, stream=True
        )
        [event async for event in stream]
        for _ in range(200):
            if (await client.responses.retrieve(queued.id)).status == "completed":
                break
            await asyncio.sleep(0.02)
    await settled(wired.gateway)
    ctx = wired.gateway.ctx
    assert ctx is not None
    await ctx.recorder.flush()
    logged = {
        e["created_at"] for e in await ctx.store.find("request_logs", {"endpoint": "responses"})
    }
    stored = await ctx.store.find("responses", {})
    assert len(stored) == 3 and all(doc["created_at"] in logged for doc in stored)
