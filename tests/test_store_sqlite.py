"""The local store (SQLite): what it keeps across a restart and a kill -9, what it drops,
that its calls stay off the event loop, and several gateways on one file.

The behaviour every store shares is in test_store_contract.py (parametrized with it)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2
import pytest

from conduit_tornado import AdminClient, Gateway, Settings
from conduit_tornado.gateway import describe_store, open_store
from conduit_tornado.store import MemoryStore, MongoStore, SQLiteStore
from conduit_tornado.store.sqlite import FILE_NAME, dumps, loads, select
from tests.conftest import MASTER_KEY
from tests.served import Served, mock_config, rpm_is_exact_across, serve_fails

pytestmark = pytest.mark.asyncio
T0 = datetime(2026, 1, 1, tzinfo=UTC)
HI = [{"role": "user", "content": "Say hello"}]
MOCK = {"name": "mock", "type": "mock"}


async def test_the_default_store_is_the_local_file(tmp_path: Path) -> None:
    local = open_store(Settings(data_dir=tmp_path))
    assert isinstance(local, SQLiteStore) and local.path == tmp_path / FILE_NAME
    assert describe_store(local) == f"local file {tmp_path / FILE_NAME}"
    assert isinstance(open_store(Settings(store="memory")), MemoryStore)
    mongo = open_store(Settings(mongodb_uri="mongodb://127.0.0.1:9/"))
    assert isinstance(mongo, MongoStore)
    await mongo.close()
    with pytest.raises(ValueError, match="CONDUIT_MONGODB_URI"):
        open_store(Settings(store="mongodb"))


async def test_encoding_keeps_types_and_tag_like_strings() -> None:
    doc = {
        "_id": "a",
        "when": T0 + timedelta(microseconds=7),
        "user": "\x01Dnot a date",
        "escaped": "\x01S",
        "mid": "a\x01b",
        "nested": [{"at": T0, "n": 1.5, "ok": True, "none": None}],
    }
    assert loads(dumps(doc)) == doc
    naive = datetime(2026, 1, 1, 12)
    assert loads(dumps({"t": naive}))["t"] == naive.replace(tzinfo=UTC)  # as MongoDB does
    with pytest.raises(TypeError):  # a type JSON has no place for: refused, not mangled
        dumps({"x": {1, 2}})


async def test_filters_on_tag_like_strings_and_dates(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.sqlite3")
    await store.start()
    try:
        await store.insert("t", {"_id": "1", "s": "\x01Dx", "at": T0})
        await store.insert("t", {"_id": "2", "s": "plain", "at": T0 + timedelta(hours=1)})
        assert [d["_id"] for d in await store.find("t", {"s": "\x01Dx"})] == ["1"]
        later = await store.find("t", {"at": {"$gt": T0}})
        assert [d["_id"] for d in later] == ["2"] and later[0]["at"].tzinfo is not None
        # A filter SQL cannot express here (a list operand) is applied in Python.
        await store.insert("t", {"_id": "3", "tags": ["x"]})
        assert [d["_id"] for d in await store.find("t", {"tags": ["x"]})] == ["3"]
        assert await store.count("t", {"tags": ["x"]}) == 1
    finally:
        await store.close()


async def test_store_calls_run_off_the_event_loop_thread(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.sqlite3")
    await store.start()
    threads: set[int] = set()
    try:
        assert store._db is not None
        store._db.set_trace_callback(lambda _: threads.add(threading.get_ident()))
        await store.insert("t", {"_id": "a", "n": 1})
        await store.increment("t", "a", {"n": 1})
        await store.find("t", {"n": {"$gte": 1}})
    finally:
        await store.close()
    assert threads and threading.get_ident() not in threads
    assert len(threads) == 1  # one worker, one connection


async def test_gateway_restart_keeps_keys_providers_usage_and_master_key(
    tmp_path: Path,
) -> None:
    settings = Settings(host="127.0.0.1", port=0, data_dir=tmp_path, log_flush_interval=0.05)
    first = Gateway(settings)
    await first.start()
    master = first.generated_master_key
    assert master is not None
    async with AdminClient(first.url, master) as admin:
        await admin.create_provider(name="up", type="mock", api_key="sk-kept-secret")
        await admin.create_model(name="m", deployments=[{"provider": "up", "model": "x"}])
        created = await admin.create_key(name="kept", rpm=100)
    async with httpx2.AsyncClient(base_url=first.url) as http:
        r = await http.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": HI},
            headers={"Authorization": f"Bearer {created['key']}"},
        )
    assert r.status_code == 200
    await first.stop()  # flushes the request log and usage

    again = Gateway(settings)
    await again.start()
    try:
        assert again.generated_master_key is None  # kept (hashed), not generated again
        assert again.ctx is not None
        provider = again.ctx.catalog.providers["up"]
        assert provider.credential_error is None and provider.api_key == "sk-kept-secret"
        async with AdminClient(again.url, master) as admin:
            assert (await admin.get_key(created["id"]))["name"] == "kept"
            logs = await admin.logs(key_id=created["id"])
            usage = await admin.usage(key_id=created["id"])
        assert logs["total"] == 1
        assert sum(row["requests"] for row in usage["data"]) == 1
        async with httpx2.AsyncClient(base_url=again.url) as http:
            r = await http.post(
                "/v1/chat/completions",
                json={"model": "m", "messages": HI},
                headers={"Authorization": f"Bearer {created['key']}"},
            )
            ready = await http.get("/health/ready")
        assert r.status_code == 200
        assert ready.json() == {"status": "ok", "store": "local"}
    finally:
        await again.stop()
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / FILE_NAME).stat().st_mode & 0o777 == 0o600


async def test_serve_killed_with_sigkill_keeps_what_it_had_written(tmp_path: Path) -> None:
    env = {"CONDUIT_LOG_FLUSH_INTERVAL": "0.1"}
    served = await Served.start(tmp_path, env=env)
    url = served.url
    try:
        async with AdminClient(url, MASTER_KEY) as admin:
            await admin.create_provider(name="up", type="mock", api_key="sk-survives")
            await admin.create_model(name="m", deployments=[{"provider": "up", "model": "x"}])
            created = await admin.create_key(name="durable")
            auth = {"Authorization": f"Bearer {created['key']}"}
            async with httpx2.AsyncClient(base_url=url) as http:
                for _ in range(3):
                    r = await http.post(
                        "/v1/chat/completions", json={"model": "m", "messages": HI}, headers=auth
                    )
                    assert r.status_code == 200
            for _ in range(100):  # until the batched writes are through (one flush interval)
                if (await admin.logs(key_id=created["id"]))["total"] == 3:
                    break
                await asyncio.sleep(0.05)
    finally:
        status = await served.kill()  # no shutdown: nothing flushed on the way out
    assert status == -signal.SIGKILL

    served = await Served.start(tmp_path, env=env)  # the same data directory
    url = served.url
    try:
        async with AdminClient(url, MASTER_KEY) as admin:
            assert (await admin.get_key(created["id"]))["name"] == "durable"
            assert (await admin.logs(key_id=created["id"]))["total"] == 3
            usage = await admin.usage(key_id=created["id"])
            assert sum(row["requests"] for row in usage["data"]) == 3
        async with httpx2.AsyncClient(base_url=url) as http:
            r = await http.post(
                "/v1/chat/completions", json={"model": "m", "messages": HI}, headers=auth
            )
        assert r.status_code == 200  # the provider's credentials still decrypt
    finally:
        await served.stop()


async def test_rpm_is_exact_for_two_processes_on_one_file(tmp_path: Path) -> None:
    """Two `serve` processes on one file: SQLite's locking makes each counter update
    atomic across them, so a shared rpm limit holds exactly."""
    served = [await Served.start(tmp_path, config=mock_config()) for _ in range(2)]
    try:
        await rpm_is_exact_across(served)
    finally:
        for one in served:
            await one.stop()


async def test_log_retention_and_the_count_bound(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.sqlite3", log_retention_days=30, max_logs=150)
    await store.start()
    try:
        old = [{"_id": f"old{i}", "created_at": T0 + timedelta(minutes=i)} for i in range(50)]
        await store.insert_many("request_logs", old)
        later = T0 + timedelta(days=31)
        await store.insert_many(
            "request_logs", [{"_id": f"new{i}", "created_at": later} for i in range(50)]
        )
        kept = await store.find("request_logs", {}, limit=1000)
        assert {d["_id"] for d in kept} == {f"new{i}" for i in range(50)}  # the old: past 30 days
        for batch in range(4):  # 200 more, each within the retention: the count bound
            await store.insert_many(
                "request_logs",
                [{"_id": f"b{batch}-{i:02d}", "created_at": later} for i in range(50)],
            )
        kept = await store.find("request_logs", {}, limit=1000)
        assert len(kept) == 150 and {d["_id"][:2] for d in kept} == {"b1", "b2", "b3"}
    finally:
        await store.close()


async def test_ended_windows_are_dropped(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.sqlite3")
    await store.start()
    try:
        for n in range(3 * 24 * 2):  # three days of half-hour windows
            end = T0 + timedelta(minutes=30 * (n + 1))
            await store.increment(
                "limit_windows", f"w{n}", {"r": 1}, set_on_insert={"expires_at": end}
            )
        windows = await store.find("limit_windows", {}, limit=10_000)
        ends = [w["expires_at"] for w in windows]
        assert len(windows) <= 49 and max(ends) - min(ends) <= timedelta(days=1)
    finally:
        await store.close()


async def test_the_file_stays_bounded_under_a_long_run(tmp_path: Path) -> None:
    """Logs arriving for much longer than the bound keeps: once the bound is reached,
    deleted pages are reused and the file (with its WAL) stops growing."""
    path = tmp_path / "s.sqlite3"
    store = SQLiteStore(path, max_logs=2_000)
    await store.start()

    def size() -> int:
        return sum(p.stat().st_size for p in tmp_path.iterdir() if p.name.startswith("s.sqlite3"))

    async def run(batches: int, start: int) -> None:
        for b in range(start, start + batches):
            when = T0 + timedelta(seconds=b)
            await store.insert_many(
                "request_logs",
                [
                    {"_id": f"{b:06d}-{i:03d}", "created_at": when, "key_id": "k", "x": "y" * 200}
                    for i in range(100)
                ],
            )

    try:
        await run(60, 0)  # 6,000 logs: three times the bound
        first = size()
        await run(240, 60)  # four times as many again
        assert await store.count("request_logs", {}) == 2_000
        assert size() <= first * 1.25
    finally:
        await store.close()
    with sqlite3.connect(path) as db:  # the file is a plain SQLite database
        assert db.execute('SELECT count(*) FROM "c_request_logs"').fetchone()[0] == 2_000


async def test_serve_with_an_unusable_data_dir_exits_with_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data directory should be")
    done = await serve_fails(tmp_path, env={"CONDUIT_DATA_DIR": str(blocker / "data")})
    assert done.returncode == 1
    assert done.stderr.startswith("error: cannot reach the store at start-up: local store:")
    assert str(blocker / "data") in done.stderr and "Traceback" not in done.stderr


async def test_a_notebook_gateway_keeps_its_keys_across_kernel_restarts() -> None:
    """conduit_tornado.start() with no store: the local file (here the test's
    CONDUIT_DATA_DIR), so keys made in one session are there in the next."""
    import conduit_tornado

    first = await conduit_tornado.start(port=0)
    try:
        assert first.store.kind == "local"
        created = await first.admin.create_key(name="from-the-widget")
    finally:
        await first.stop()
    second = await conduit_tornado.start(port=0)  # a new master key; the same keys
    try:
        assert (await second.admin.get_key(created["id"]))["name"] == "from-the-widget"
    finally:
        await second.stop()
    memory = await conduit_tornado.start(port=0, store="memory")
    try:
        assert (await memory.admin.list_keys())["data"] == []
    finally:
        await memory.stop()


async def test_the_conversation_lookups_are_answered_by_indexes(tmp_path: Path) -> None:
    """What api/conversations.py asks of a conversation's items (a page of them in either
    order, the calls an output answers, the outputs of a call) reads an index, not the
    whole collection."""
    store = SQLiteStore(tmp_path / "s.sqlite3")
    await store.start()
    try:
        await store.insert("conversation_items", {"_id": "c:1", "conversation": "c", "seq": 1})
        pages = [({"conversation": "c"}, False), ({"conversation": "c", "seq": {"$lt": 5}}, True)]
        for where, descending in pages:  # ordered by the index: a page reads only itself
            plan = _plan(store, *select("conversation_items", where, "seq", descending))
            assert "USING INDEX i_conversation_items_" in plan, (where, plan)
            assert "TEMP B-TREE" not in plan, (where, plan)
        # Only the few matches are sorted here.
        for where in [
            {"conversation": "c", "call": {"$in": ["a", "b"]}},
            {"conversation": "c", "output_of": "a"},
        ]:
            plan = _plan(store, *select("conversation_items", where))
            assert "USING INDEX i_conversation_items_" in plan, (where, plan)
    finally:
        await store.close()


def _plan(store: SQLiteStore, query: str, params: list[object]) -> str:
    with contextlib.closing(sqlite3.connect(store.path)) as db:
        return " ".join(row[-1] for row in db.execute(f"EXPLAIN QUERY PLAN {query}", params))
