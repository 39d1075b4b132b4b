"""Usage, cost and request logs as they land in the store (memory and MongoDB)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import cast

import httpx2
import openai
import pytest

from conduit_tornado import Settings
from conduit_tornado.core.clock import Clock
from conduit_tornado.metering.pricing import PriceTable
from conduit_tornado.metering.recorder import Recorder
from conduit_tornado.routing.providers.base import Usage
from conduit_tornado.store import MemoryStore, Store
from tests.conftest import MASTER_KEY, settled
from tests.fakes.providers import PROMPT_TOKENS
from tests.proxy_setup import Wired
from tests.store_faults import AnswersLost

pytestmark = pytest.mark.asyncio
HI = [{"role": "user", "content": "Say hello"}]


async def test_logs_rollups_and_spend_in_the_store(wired_store: Wired) -> None:
    w = wired_store
    async with w.client() as client:
        await client.chat.completions.create(model="gpt", messages=HI, user="alice")  # type: ignore[arg-type]
        await client.chat.completions.create(model="gpt", messages=HI, user="alice")  # type: ignore[arg-type]
        await client.chat.completions.create(model="claude", messages=HI, user="bob")  # type: ignore[arg-type]
        stream = await client.chat.completions.create(
            model="gpt", messages=HI, stream=True, user="bob"
        )  # type: ignore[arg-type]
        async for _ in stream:
            pass
    ctx = w.gateway.ctx
    assert ctx is not None
    await ctx.recorder.flush()
    await settled(w.gateway)  # spend is written behind the requests
    store = ctx.store

    logs = await store.find("request_logs", {}, sort="created_at")
    assert len(logs) == 4
    first = logs[0]
    assert first["key_id"] == w.key_id and first["model"] == "gpt" and first["provider"] == "oai"
    assert first["deployment"] == "gpt-4o" and first["status"] == 200 and first["user"] == "alice"
    assert first["prompt_tokens"] == PROMPT_TOKENS and first["completion_tokens"] == 4
    gpt4o = PriceTable.bundled().lookup("gpt-4o")
    assert gpt4o is not None
    assert first["cost"] == pytest.approx(gpt4o.cost(Usage(PROMPT_TOKENS, 4)))
    assert first["latency_ms"] > 0 and first["upstream_ms"] > 0 and first["overhead_ms"] >= 0
    assert [log["stream"] for log in logs] == [False, False, False, True]
    assert logs[3]["estimated"] is False  # the stream's usage came from the provider

    rollups = await store.find("usage", {"key_id": w.key_id})
    by = {(r["model"], r["user"]): r for r in rollups}
    assert set(by) == {("gpt", "alice"), ("claude", "bob"), ("gpt", "bob")}
    assert by[("gpt", "alice")]["requests"] == 2
    assert by[("gpt", "alice")]["prompt_tokens"] == 2 * PROMPT_TOKENS
    assert by[("gpt", "alice")]["day"] == datetime.now(UTC).strftime("%Y-%m-%d")

    key = await store.get("keys", w.key_id)
    assert key is not None
    assert key["spend"] == pytest.approx(sum(log["cost"] for log in logs))
    assert key["last_used_at"] is not None


async def test_admin_logs_and_usage_endpoints(wired_store: Wired) -> None:
    w = wired_store
    async with w.client() as client:
        for user in ("alice", "bob", "bob"):
            await client.chat.completions.create(model="gpt", messages=HI, user=user)  # type: ignore[arg-type]
        await client.embeddings.create(model="emb", input="x")
    async with httpx2.AsyncClient(
        base_url=w.gateway.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}
    ) as http:
        r = await http.post(
            "/v1/chat/completions",
            json={"model": "missing", "messages": HI},
            headers={"Authorization": f"Bearer {w.key}"},
        )
        assert r.status_code == 404
        logs = (await http.get("/admin/v1/logs", params={"limit": 10})).json()
        assert logs["total"] == 5 and logs["data"][0]["status"] == 404  # newest first
        assert logs["data"][0]["error_code"] == "model_not_found"
        assert (await http.get("/admin/v1/logs", params={"model": "emb"})).json()["total"] == 1
        assert (await http.get("/admin/v1/logs", params={"status": "404"})).json()["total"] == 1
        assert (await http.get("/admin/v1/logs", params={"user": "bob"})).json()["total"] == 2
        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert (await http.get("/admin/v1/logs", params={"since": future})).json()["total"] == 0
        assert (await http.get("/admin/v1/logs", params={"since": "yesterday"})).status_code == 400

        usage = (await http.get("/admin/v1/usage", params={"key_id": w.key_id})).json()
        assert usage["totals"]["requests"] == 5 and usage["totals"]["errors"] == 1
        assert usage["data"] and not any("settled" in row for row in usage["data"])
        by_user = (await http.get("/admin/v1/usage", params={"group_by": "user"})).json()
        rows = {row["user"]: row for row in by_user["data"]}
        assert rows["bob"]["requests"] == 2 and rows["alice"]["requests"] == 1
        by_model = (await http.get("/admin/v1/usage", params={"group_by": "model"})).json()
        assert {row["model"] for row in by_model["data"]} == {"gpt", "emb", "missing"}
        today = datetime.now(UTC).date().isoformat()
        by_day = (
            await http.get(
                "/admin/v1/usage", params={"group_by": "day", "start": today, "end": today}
            )
        ).json()
        assert by_day["data"][0]["day"] == today and by_day["data"][0]["requests"] == 5
        assert by_day["totals"]["cost"] == pytest.approx(sum(r["cost"] for r in by_model["data"]))
        assert (await http.get("/admin/v1/usage", params={"group_by": "planet"})).status_code == 400


async def test_admin_counts_are_integers_and_spend_is_rounded(wired_store: Wired) -> None:
    w = wired_store
    for name, out_per_mtok in (("tenth", 25_000), ("fifth", 50_000)):  # 4 tokens out each
        await w.admin.create_model(
            name=name,
            deployments=[{"provider": "oai", "model": "some-unknown-model"}],
            pricing={"input_per_mtok": 0, "output_per_mtok": out_per_mtok},
        )
    spender = await w.admin.create_key(name="spender")
    idle = await w.admin.create_key(name="idle")
    assert spender["total_spend"] == 0 and spender["spend"] == 0
    client = openai.AsyncOpenAI(base_url=w.gateway.url + "/v1", api_key=spender["key"])
    async with client:
        for model in ("tenth", "fifth"):  # $0.1 + $0.2: 0.30000000000000004 as floats
            await client.chat.completions.create(model=model, messages=HI)  # type: ignore[arg-type]
    await settled(w.gateway)
    async with httpx2.AsyncClient(
        base_url=w.gateway.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}
    ) as http:
        raw = (await http.get(f"/admin/v1/keys/{spender['id']}")).text
        assert '"spend":0.3,' in raw.replace(" ", "") and '"total_spend":0.3' in raw.replace(
            " ", ""
        )
        never = (await http.get(f"/admin/v1/keys/{idle['id']}")).json()
        assert never["total_spend"] == 0 and never["spend"] == 0
        listed = {k["id"]: k for k in (await http.get("/admin/v1/keys")).json()["data"]}
        assert listed[idle["id"]]["total_spend"] == 0
        params: dict[str, str] = {"key_id": spender["id"]}
        for group_by in (None, "day", "model", "key", "user"):
            if group_by:
                params["group_by"] = group_by
            usage = (await http.get("/admin/v1/usage", params=params)).json()
            for row in [usage["totals"], *usage["data"]]:
                for count in ("requests", "errors", "prompt_tokens", "total_tokens"):
                    assert type(row[count]) is int, (group_by, count, row)
            assert usage["totals"]["requests"] == 2
            assert repr(usage["totals"]["cost"]) == "0.3", usage["totals"]


async def test_unpriced_models_are_visible_not_free(wired_store: Wired) -> None:
    w = wired_store
    await w.admin.create_model(
        name="odd", deployments=[{"provider": "oai", "model": "some-unknown-model"}]
    )
    await w.admin.create_model(
        name="priced",
        deployments=[{"provider": "oai", "model": "some-unknown-model"}],
        pricing={"input_per_mtok": 1000, "output_per_mtok": 2000},
    )
    async with w.client() as client:
        raw = await client.chat.completions.with_raw_response.create(model="odd", messages=HI)  # type: ignore[arg-type]
        assert "x-conduit-cost-usd" not in raw.headers
        priced = await client.chat.completions.with_raw_response.create(model="priced", messages=HI)  # type: ignore[arg-type]
        assert float(priced.headers["x-conduit-cost-usd"]) == pytest.approx(
            (PROMPT_TOKENS * 1000 + 4 * 2000) / 1e6
        )
    ctx = w.gateway.ctx
    assert ctx is not None
    await ctx.recorder.flush()
    odd = await ctx.store.find_one("request_logs", {"model": "odd"})
    assert odd is not None and odd["unpriced"] is True and odd["cost"] is None
    rollup = await ctx.store.find_one("usage", {"model": "odd"})
    assert rollup is not None and rollup["unpriced_requests"] == 1


async def test_queue_overflow_is_counted_and_exposed(wired: Wired) -> None:
    recorder = Recorder(MemoryStore(), Settings(log_queue_max=100), Clock())
    for i in range(105):
        recorder.record(
            {"_id": f"x{i}", "created_at": datetime.now(UTC), "model": "m", "key_id": None}
        )
    assert recorder.dropped == 5 and recorder.pending == 100
    await recorder.flush()
    assert recorder.pending == 0 and recorder.written == 100

    async with wired.client() as client:
        await client.chat.completions.create(model="gpt", messages=HI)  # type: ignore[arg-type]
    async with httpx2.AsyncClient(base_url=wired.gateway.url) as http:
        r = await http.get("/admin/v1/metrics", headers={"Authorization": f"Bearer {MASTER_KEY}"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        metrics = dict(
            line.split(" ") for line in r.text.splitlines() if line and not line.startswith("#")
        )
        assert metrics["conduit_logs_dropped_total"] == "0"
        assert (
            int(metrics["conduit_logs_written_total"]) + int(metrics["conduit_logs_pending"]) == 1
        )
        assert (
            await http.get("/admin/v1/metrics", headers={"Authorization": f"Bearer {wired.key}"})
        ).status_code == 401


async def test_overhead_histogram_matches_the_headers(wired: Wired) -> None:
    headers = []
    async with httpx2.AsyncClient(base_url=wired.gateway.url) as http:
        for _ in range(5):
            r = await http.post(
                "/v1/chat/completions",
                json={"model": "gpt", "messages": HI},
                headers={"Authorization": f"Bearer {wired.key}"},
            )
            headers.append(float(r.headers["x-conduit-overhead-ms"]))
        text = (
            await http.get("/admin/v1/metrics", headers={"Authorization": f"Bearer {MASTER_KEY}"})
        ).text
    ctx = wired.gateway.ctx
    assert ctx is not None
    assert ctx.overhead.count == 5 and 'conduit_overhead_seconds_bucket{le="+Inf"} 5' in text
    # The header is taken just before the answer goes out; the histogram at the end: the
    # histogram's total can only be the larger, and not by much.
    assert ctx.overhead.sum * 1000 >= sum(headers) * 0.999


async def test_clock_keeps_whole_milliseconds_in_utc() -> None:
    clock = Clock()
    for _ in range(2000):  # MongoDB keeps milliseconds: both stores must see the same time
        before = datetime.now(UTC)
        now = clock.now()
        assert now.tzinfo is UTC and now.microsecond % 1000 == 0
        assert before - timedelta(milliseconds=1) <= now <= datetime.now(UTC)


async def test_a_log_batch_partly_written_before_is_completed(store: Store) -> None:
    """A write that timed out after the server applied part of it is retried: what is
    there already stays once, the rest is written, and later batches still flow."""
    recorder = Recorder(store, Settings(), Clock())
    entries = [
        {"_id": f"log_{i}", "created_at": datetime.now(UTC), "model": "m", "key_id": None}
        for i in range(6)
    ]
    await store.insert("request_logs", dict(entries[1]))
    await store.insert("request_logs", dict(entries[4]))
    for entry in entries:
        recorder.record(entry)
    await recorder.flush()
    assert recorder.pending == 0
    written = await store.find("request_logs", {}, limit=100)
    assert sorted(doc["_id"] for doc in written) == [entry["_id"] for entry in entries]

    recorder.record({"_id": "log_6", "created_at": datetime.now(UTC), "model": "m"})
    await recorder.flush()
    assert await store.count("request_logs", {}) == 7 and recorder.pending == 0


async def test_logs_and_usage_whose_answers_were_lost_count_once(store: Store) -> None:
    lossy = AnswersLost(store)
    recorder = Recorder(cast(Store, lossy), Settings(), Clock())
    now = datetime.now(UTC)
    for i in range(3):
        recorder.record(
            {"_id": f"log_{i}", "created_at": now, "key_id": "key_u", "model": "m"}
            | {"user": None, "status": 200, "prompt_tokens": 5, "cost": 0.5}
        )
    lossy.losing = {"insert_many", "increment"}  # applied, and the gateway hears a timeout
    await recorder.flush()
    await recorder.flush()
    assert lossy.lost >= 2  # the log batch and the rollup, at least once each
    lossy.losing = set()
    await recorder.flush()
    assert recorder.pending == 0
    assert await store.count("request_logs", {}) == 3
    (rollup,) = await store.find("usage", {})
    assert rollup["requests"] == 3 and rollup["prompt_tokens"] == 15
    assert rollup["cost"] == pytest.approx(1.5)


PACED = "one two three four five six seven eight nine ten"  # a frame a word, and more
STREAMS = {
    "chat": ("/v1/chat/completions", {"model": "gpt", "messages": HI}),
    "responses": ("/v1/responses", {"model": "gpt", "input": "Say hello"}),
    "messages": ("/v1/messages", {"model": "claude", "max_tokens": 50, "messages": HI}),
    "messages-translated": ("/v1/messages", {"model": "gpt", "max_tokens": 50, "messages": HI}),
}


@pytest.mark.parametrize("route", list(STREAMS))
async def test_a_stream_s_overhead_leaves_out_the_provider_s_pace(wired: Wired, route: str) -> None:
    """A provider that sends its events slowly: the time spent waiting for them is the
    stream's upstream time, and its overhead only the gateway's own."""
    delay = 0.03
    wired.fake.then(chunk_delay=delay, text=PACED)
    path, body = STREAMS[route]
    async with httpx2.AsyncClient(base_url=wired.gateway.url, timeout=30) as http:
        r = await http.post(
            path, json={**body, "stream": True}, headers={"Authorization": f"Bearer {wired.key}"}
        )
        assert r.status_code == 200 and r.text.count("data:") >= 10
    await settled(wired.gateway)
    entry = (await wired.admin.logs())["data"][0]
    paced = 10 * delay * 1000  # at least a delay after each of ten words' frames
    assert entry["status"] == 200 and entry["latency_ms"] >= paced
    assert entry["upstream_ms"] >= paced
    assert entry["overhead_ms"] < paced / 4  # was the pacing and more
    assert entry["upstream_ms"] + entry["overhead_ms"] == pytest.approx(entry["latency_ms"], abs=1)
