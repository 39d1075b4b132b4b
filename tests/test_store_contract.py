"""The same behaviour from every Store: memory, and MongoDB (jongodb or a real mongod)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from conduit_tornado.store import DuplicateError, MongoStore, Store, StoreUnavailable
from tests.conftest import collect_dropped_sockets, free_port

pytestmark = pytest.mark.asyncio
T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def test_insert_get_and_duplicate_id(store: Store) -> None:
    await store.insert("things", {"_id": "a", "n": 1, "when": T0})
    assert await store.get("things", "a") == {"_id": "a", "n": 1, "when": T0}
    assert await store.get("things", "missing") is None
    with pytest.raises(DuplicateError) as info:
        await store.insert("things", {"_id": "a", "n": 2})
    assert info.value.field == "_id"


async def test_unique_fields_on_insert_and_update(store: Store) -> None:
    await store.insert("keys", {"_id": "k1", "hash": "h1"})
    await store.insert("keys", {"_id": "k2", "hash": "h2"})
    with pytest.raises(DuplicateError) as info:
        await store.insert("keys", {"_id": "k3", "hash": "h1"})
    assert info.value.field == "hash"
    with pytest.raises(DuplicateError):
        await store.update("keys", "k2", {"hash": "h1"})
    assert (await store.get("keys", "k2"))["hash"] == "h2"  # type: ignore[index]
    assert await store.count("keys", {}) == 2


async def test_returned_documents_are_copies(store: Store) -> None:
    doc = {"_id": "a", "tags": ["x"]}
    await store.insert("things", doc)
    doc["tags"].append("mutated")
    got = await store.get("things", "a")
    assert got == {"_id": "a", "tags": ["x"]}
    got["tags"].append("again")  # type: ignore[index]
    assert (await store.get("things", "a")) == {"_id": "a", "tags": ["x"]}


async def test_get_can_read_only_some_fields(store: Store) -> None:
    await store.insert("things", {"_id": "a", "spend": 1.5, "limits": {"rpm": 3}, "big": "x" * 99})
    got = await store.get("things", "a", ("spend", "limits", "absent"))
    assert got == {"_id": "a", "spend": 1.5, "limits": {"rpm": 3}}
    got["limits"]["rpm"] = 9  # type: ignore[index]
    assert (await store.get("things", "a", ("limits",))) == {"_id": "a", "limits": {"rpm": 3}}
    assert await store.get("things", "nope", ("spend",)) is None
    after = await store.increment("things", "a", {"spend": 1}, returning=("spend",))
    assert after == {"_id": "a", "spend": 2.5}


async def test_find_filters_sort_and_paging(store: Store) -> None:
    for i in range(7):
        await store.insert(
            "logs",
            {"_id": f"l{i}", "k": "a" if i % 2 else "b", "at": T0 + timedelta(minutes=i), "n": i},
        )
    assert [d["_id"] for d in await store.find("logs", {"k": "a"})] == ["l1", "l3", "l5"]
    newest = await store.find("logs", {}, sort="at", descending=True, limit=3)
    assert [d["n"] for d in newest] == [6, 5, 4]
    page2 = await store.find("logs", {}, sort="at", descending=True, offset=3, limit=3)
    assert [d["n"] for d in page2] == [3, 2, 1]
    window = {"at": {"$gte": T0 + timedelta(minutes=2), "$lt": T0 + timedelta(minutes=5)}}
    assert [d["n"] for d in await store.find("logs", window, sort="at")] == [2, 3, 4]
    assert await store.count("logs", {"n": {"$in": [1, 2, 99]}}) == 2
    assert await store.count("logs", {"k": {"$ne": "a"}}) == 4
    assert await store.count("logs", {"missing": {"$gte": 0}}) == 0
    assert await store.find_one("logs", {"k": "b", "n": {"$gt": 4}}) == {
        "_id": "l6",
        "k": "b",
        "at": T0 + timedelta(minutes=6),
        "n": 6,
    }


async def test_update_set_unset_and_condition(store: Store) -> None:
    await store.insert("things", {"_id": "a", "x": 1, "y": 2})
    assert await store.update("things", "a", {"x": 5}, ["y"]) == {"_id": "a", "x": 5}
    assert await store.update("things", "missing", {"x": 1}) is None
    assert await store.update("things", "a", {"x": 6}, where={"x": 99}) is None
    assert await store.update("things", "a", {"x": 6}, where={"x": 5}) == {"_id": "a", "x": 6}
    assert await store.update("things", "a") == {"_id": "a", "x": 6}


async def test_delete(store: Store) -> None:
    await store.insert("things", {"_id": "a"})
    assert await store.delete("things", "a") is True
    assert await store.delete("things", "a") is False
    assert await store.get("things", "a") is None


async def test_increment_upserts_and_is_atomic_under_concurrency(store: Store) -> None:
    first = await store.increment(
        "usage", "u1", {"requests": 1, "cost": 0.25}, set_on_insert={"day": "2026-01-01"}
    )
    assert first == {"_id": "u1", "day": "2026-01-01", "requests": 1, "cost": 0.25}
    await asyncio.gather(
        *(store.increment("usage", "u1", {"requests": 1, "cost": 0.25}) for _ in range(40))
    )
    after = await store.get("usage", "u1")
    assert after is not None
    assert after["requests"] == 41
    assert after["cost"] == pytest.approx(41 * 0.25)
    assert after["day"] == "2026-01-01"
    assert await store.increment("usage", "nope", {"requests": 1}, upsert=False) is None
    assert await store.get("usage", "nope") is None


async def test_insert_many_and_sum_by(store: Store) -> None:
    await store.insert_many(
        "usage",
        [
            {"_id": "1", "key_id": "a", "day": "d1", "tokens": 10, "cost": 1.0},
            {"_id": "2", "key_id": "a", "day": "d2", "tokens": 5, "cost": 0.5},
            {"_id": "3", "key_id": "b", "day": "d1", "tokens": 7, "cost": 0.25},
        ],
    )
    await store.insert_many("usage", [])
    sums = await store.sum_by("usage", {"day": {"$in": ["d1", "d2"]}}, "key_id", ["tokens", "cost"])
    assert sums == {"a": {"tokens": 15, "cost": 1.5}, "b": {"tokens": 7, "cost": 0.25}}
    assert await store.sum_by("usage", {"day": "d2"}, "key_id", ["tokens"]) == {"a": {"tokens": 5}}
    with pytest.raises(DuplicateError):
        await store.insert_many("usage", [{"_id": "4"}, {"_id": "1"}])
    assert await store.get("usage", "1") == {
        "_id": "1",
        "key_id": "a",
        "day": "d1",
        "tokens": 10,
        "cost": 1.0,
    }


async def test_ping(store: Store, store_kind: str) -> None:
    await store.ping()  # a serving store answers (else raises), and keeps serving
    await store.insert("things", {"_id": "after-ping"})
    assert await store.get("things", "after-ping") == {"_id": "after-ping"}
    if store_kind != "mongodb":
        return
    # The same question to a port where nothing answers is an outage, within the timeout.
    dead = MongoStore(
        f"mongodb://127.0.0.1:{free_port()}/?directConnection=true", "t_dead", timeout=0.5
    )
    try:
        with pytest.raises(StoreUnavailable):
            await dead.ping()
    finally:
        await dead.close()
    # PyMongo leaves the socket of a refused connection to the garbage collector.
    collect_dropped_sockets()


async def test_increment_with_condition_set_and_dotted_paths(store: Store) -> None:
    doc = await store.increment("c", "x", {"by.a": 1, "n": 1})
    assert doc == {"_id": "x", "by": {"a": 1}, "n": 1}
    doc = await store.increment("c", "x", {"by.b": 2})
    assert doc is not None and doc["by"] == {"a": 1, "b": 2}
    await store.insert("keys", {"_id": "k", "hash": "h", "period": "p1", "spend": 1.0})
    assert (
        await store.increment("keys", "k", {"spend": 0.5}, where={"period": "p2"}, upsert=False)
        is None
    )
    rolled = await store.increment(
        "keys",
        "k",
        {"total": 0.5},
        set={"spend": 0.5, "period": "p2"},
        where={"period": {"$ne": "p2"}},
        upsert=False,
    )
    assert (
        rolled is not None
        and rolled["spend"] == 0.5
        and rolled["period"] == "p2"
        and rolled["total"] == 0.5
    )
    again = await store.increment(
        "keys", "k", {"spend": 0.25}, where={"period": "p2"}, upsert=False
    )
    assert again is not None and again["spend"] == 0.75


async def test_concurrent_upserts_of_one_counter(store: Store) -> None:
    results = await asyncio.gather(*(store.increment("w", "win", {"r": 1}) for _ in range(30)))
    counts = sorted(r["r"] for r in results if r is not None)
    assert counts == list(
        range(1, 31)
    )  # every caller saw a distinct count: the basis of exact limits


async def test_filters_reach_into_sub_documents(store: Store) -> None:
    await store.insert("alerts", {"_id": "a", "subject": {"id": "k1", "type": "key"}})
    await store.insert("alerts", {"_id": "b", "subject": {"id": "k2", "type": "key"}})
    assert [d["_id"] for d in await store.find("alerts", {"subject.id": "k2"})] == ["b"]
    assert await store.count("alerts", {"subject.type": "key"}) == 2


@pytest.mark.realmongo
async def test_ttl_indexes_on_a_real_mongod(mongo_uri: str) -> None:
    from pymongo import AsyncMongoClient

    from tests.conftest import new_mongo_store

    store = new_mongo_store(mongo_uri)
    await store.start()
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo_uri)
    try:
        db = client[store.database]
        logs = await db["request_logs"].index_information()
        windows = await db["limit_windows"].index_information()
        assert any(ix.get("expireAfterSeconds") == 30 * 86_400 for ix in logs.values())
        assert any(ix.get("expireAfterSeconds") == 0 for ix in windows.values())
    finally:
        await client.close()
        await store.close()


async def test_mongodb_indexes_the_conversation_lookups(mongo_uri: str) -> None:
    """A page of a conversation's items (sorted by seq, then _id), the calls an output
    answers, the outputs of a call (api/conversations.py): each has its index. (jongodb
    lists indexes but cannot explain a query; the SQLite store's plans are checked in
    test_store_sqlite.py.)"""
    from pymongo import AsyncMongoClient

    from tests.conftest import new_mongo_store

    store = new_mongo_store(mongo_uri)
    await store.start()
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo_uri)
    try:
        indexes = await client[store.database]["conversation_items"].index_information()
        keys = [[field for field, _ in ix["key"]] for ix in indexes.values()]
        assert ["conversation", "seq", "_id"] in keys
        assert ["conversation", "call"] in keys
        assert ["conversation", "output_of"] in keys
    finally:
        await client.close()
        await store.close()
        collect_dropped_sockets()


async def test_the_memory_store_stays_bounded() -> None:
    from conduit_tornado.store import MemoryStore

    store = MemoryStore(max_logs=100)
    for i in range(150):
        await store.insert("request_logs", {"_id": f"log{i:03d}", "n": i})
    kept = await store.find("request_logs", {}, limit=1000)
    assert len(kept) == 100 and kept[0]["_id"] == "log050"  # the newest 100
    start = T0
    for minute in range(3 * 24 * 60 // 30):  # three days of half-hour windows
        end = start + timedelta(minutes=30 * (minute + 1))
        await store.increment(
            "limit_windows", f"w{minute}", {"r": 1}, set_on_insert={"expires_at": end}
        )
    windows = await store.find("limit_windows", {}, limit=10_000)
    ends = [w["expires_at"] for w in windows]
    assert len(windows) <= 49 and max(ends) - min(ends) <= timedelta(
        days=1
    )  # a day's worth, not three


async def test_increment_without_returning(store: Store) -> None:
    assert await store.increment("c", "n", {"v": 2}, returning=False) == {}  # upserted
    assert await store.increment("c", "n", {"v": 3}, returning=False) == {}
    assert (
        await store.increment(
            "c", "n", {"v": 1}, where={"v": {"$gt": 100}}, upsert=False, returning=False
        )
        is None
    )
    assert await store.increment("c", "missing", {"v": 1}, upsert=False, returning=False) is None
    assert await store.get("c", "n") == {"_id": "n", "v": 5}


async def test_increment_many_adds_to_existing_documents_only(store: Store) -> None:
    await store.increment("c", "a", {"v": 1, "by.x": 2})
    await store.increment("c", "b", {"v": 10})
    await store.increment_many(
        "c", {"a": {"v": 4, "by.x": -2}, "b": {"v": -1.5, "w": 1}, "gone": {"v": 1}}
    )
    await store.increment_many("c", {})
    assert await store.get("c", "a") == {"_id": "a", "v": 5, "by": {"x": 0}}
    assert await store.get("c", "b") == {"_id": "b", "v": 8.5, "w": 1}
    assert await store.get("c", "gone") is None  # never created


async def test_increment_many_once_takes_a_batch_at_most_once(store: Store) -> None:
    await store.increment("c", "a", {"v": 1})
    await store.increment("c", "b", {"v": 1})
    await store.increment_many("c", {"a": {"v": 2}}, once=("w1", 1))
    # The same batch again (its first outcome unknown), now with b, which missed it.
    await store.increment_many("c", {"a": {"v": 2}, "b": {"v": 2}}, once=("w1", 1))
    await store.increment_many("c", {"a": {"v": 5}}, once=("w2", 1))  # another writer
    await store.increment_many("c", {"a": {"v": 10}}, once=("w1", 2))  # w1's next batch
    a, b = await store.get("c", "a"), await store.get("c", "b")
    assert a is not None and b is not None
    assert a["v"] == 1 + 2 + 5 + 10 and b["v"] == 1 + 2


async def test_unset_everywhere_removes_only_the_named_fields(store: Store) -> None:
    await store.insert("things", {"_id": "a", "settled": {"w1": 3, "w2": 4}, "by": {"w1": 2}})
    await store.insert("things", {"_id": "b", "settled": {"w2": 1}, "n": 1})
    await store.insert("things", {"_id": "c", "n": 2})
    assert await store.unset_everywhere("things", ["settled.w1", "by.w1"]) == 1
    assert await store.get("things", "a") == {"_id": "a", "settled": {"w2": 4}, "by": {}}
    assert await store.get("things", "b") == {"_id": "b", "settled": {"w2": 1}, "n": 1}
    assert await store.unset_everywhere("things", ["settled.w2"]) == 2
    assert await store.get("things", "b") == {"_id": "b", "settled": {}, "n": 1}
    assert await store.get("things", "c") == {"_id": "c", "n": 2}
    assert await store.unset_everywhere("things", ["settled.gone"]) == 0


async def test_change_counters_move_with_every_change(store: Store, store_kind: str) -> None:
    assert await store.read_changes() == {}
    await store.note_change("keys", "key_1")
    await store.note_change("catalog", None)
    await store.note_change("keys", "key_2")
    got = await store.read_changes()
    if store_kind == "memory":  # one process: nobody to tell
        assert got == {}
        return
    assert {k: (d["n"], d["id"]) for k, d in got.items()} == {
        "keys": (2, "key_2"),
        "catalog": (1, None),
    }
    assert isinstance(got["keys"]["at"], datetime)


async def test_wait_for_change_returns_by_its_timeout(store: Store) -> None:
    # jongodb is not a replica set: MongoStore waits and lets the caller poll, as the
    # others do. (Change streams need a replica set; they are not exercised here.)
    await asyncio.wait_for(store.wait_for_change(0.05), 5)
    if isinstance(store, MongoStore):
        assert store.replica_set is False


@pytest.mark.realmongo
async def test_a_change_stream_wakes_the_waiter_on_a_replica_set(mongo_uri: str) -> None:
    """Only with a genuine mongod (CONDUIT_TEST_MONGODB_URI), and only a replica set has
    change streams: the path the jongodb runs cannot reach."""
    from tests.conftest import new_mongo_store

    store = new_mongo_store(mongo_uri)
    await store.start()
    try:
        await store.wait_for_change(0.05)  # learns what the server is; opens the stream
        if not store.replica_set:
            pytest.skip("a standalone mongod has no change streams")
        await store.note_change("keys", "key_1")
        # Woken by the event, long before the wait would end on its own.
        await asyncio.wait_for(store.wait_for_change(60), 10)
    finally:
        await store.close()
