"""Many instances, one gateway: admin changes reach every instance (the change feed), and
what the store keeps for instances that are gone is pruned without losing exactness."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import httpx2
import pytest
from prometheus_client import REGISTRY

from conduit_tornado import AdminClient
from conduit_tornado.admission.holdings import PARALLEL, WINDOWS
from conduit_tornado.admission.limits import INSTANCES, Limiter
from conduit_tornado.admission.pruning import Pruner
from conduit_tornado.core.schemas import GroupCreate, GroupUpdate
from conduit_tornado.gateway import reset_master_key
from conduit_tornado.store import SETTLED, SQLiteStore, Store
from conduit_tornado.store.changes import CATALOG, GROUPS, KEYS, ChangeFeed
from tests.conftest import MASTER_KEY, FakeClock, GatewayFactory
from tests.served import Served, mock_config
from tests.store_faults import AnswersLost

pytestmark = pytest.mark.asyncio
HI = [{"role": "user", "content": "Say hello"}]
APPLIED = "conduit_config_changes_applied_total"
CONVERGE = 2.0  # seconds: the bound for an admin change to reach every instance


async def _until(check: Callable[[], Awaitable[bool]], deadline: float) -> bool:
    """Whether ``check`` came true before ``deadline`` (monotonic), asking every 50 ms."""
    while True:
        if await check():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("shared", ["mongodb", "sqlite"])
async def test_two_processes_converge_after_admin_changes(
    shared: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    config = mock_config("first")
    env = {"CONDUIT_SECRET_KEY": "test-secret"}
    # The caches' own expiry is far beyond the bound: only the feed can meet it.
    env.update({"CONDUIT_KEY_CACHE_TTL": "60", "CONDUIT_CATALOG_REFRESH": "60"})
    if shared == "mongodb":
        env["CONDUIT_MONGODB_URI"] = request.getfixturevalue("mongo_uri")
        env["CONDUIT_MONGODB_DATABASE"] = "t_feed_" + os.urandom(4).hex()
    else:  # one file (both in tmp_path's data directory), as `serve --workers N` share it
        env["CONDUIT_STORE"] = "local"
    served = [await Served.start(tmp_path, config=config, env=env) for _ in range(2)]
    one, other = (instance.url for instance in served)
    admin_headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    try:
        async with AdminClient(one, MASTER_KEY) as admin, httpx2.AsyncClient(timeout=30) as http:
            created = await admin.create_key(name="shared")
            key = created["key"]

            async def ask() -> httpx2.Response:
                return await http.post(
                    f"{other}/v1/chat/completions",
                    json={"model": "m", "messages": HI},
                    headers={"Authorization": f"Bearer {key}"},
                )

            # The other instance has the key and the mapping cached before the changes.
            first = await ask()
            assert first.status_code == 200
            assert first.headers["x-conduit-model"] == "first"

            changed = await http.patch(
                f"{one}/admin/v1/models/m",
                json={"deployments": [{"provider": "mock", "model": "second"}]},
                headers=admin_headers,
            )
            assert changed.status_code == 200
            deadline = time.monotonic() + CONVERGE

            async def routed_anew() -> bool:
                answer = await ask()
                assert answer.status_code == 200
                return answer.headers["x-conduit-model"] == "second"

            assert await _until(routed_anew, deadline), "the new mapping did not arrive in 2 s"

            await admin.update_key(created["id"], enabled=False)
            deadline = time.monotonic() + CONVERGE

            async def refused() -> bool:
                return (await ask()).status_code == 401

            assert await _until(refused, deadline), "the disabled key still served after 2 s"
            answer = await ask()
            assert answer.json()["error"]["code"] == "invalid_api_key"
    finally:
        for instance in served:
            await instance.stop()


async def test_the_feed_drops_one_entry_or_everything(store: Store, store_kind: str) -> None:
    feed = ChangeFeed(store, 0.05)
    await feed.start()
    told: list[tuple[str, str | None]] = []
    feed.on(KEYS, lambda which: told.append((KEYS, which)))

    async def catalog(which: str | None) -> None:
        told.append((CATALOG, which))

    feed.on(CATALOG, catalog)
    await store.note_change(KEYS, "key_1")
    await store.note_change(CATALOG, None)
    await feed.check()
    if store_kind == "memory":  # one process: nothing to tell anyone
        assert told == [] and feed.applied == 0
        return
    assert sorted(told, key=str) == [(CATALOG, None), (KEYS, "key_1")]
    told.clear()
    await feed.check()
    assert told == []  # nothing moved since
    await store.note_change(KEYS, "key_2")
    await store.note_change(KEYS, "key_3")
    await feed.check()
    assert told == [(KEYS, None)]  # two changes between reads: every key's entry goes


# -- pruning ----------------------------------------------------------------------------------


async def _held_slots(store: Store) -> dict[str, Any]:
    doc = await store.get(PARALLEL, "key_p")
    return dict((doc or {}).get("by") or {})


async def test_a_dead_instances_entries_are_pruned_and_counts_stay_exact(
    store: Store, clock: FakeClock
) -> None:
    await store.insert("keys", {"_id": "key_p", "spend": 0.0})
    dead = Limiter(store, clock, "inst_dead", instance_ttl=120)
    live = Limiter(store, clock, "inst_live", instance_ttl=120)
    await dead.heartbeat()
    await live.heartbeat()

    # Both settle work on shared documents under their own names (settled.<writer>), and
    # both hold parallel slots (by.<instance>); the dead one crashes holding two.
    for limiter in (dead, live):
        assert await limiter._holdings.slot("key_p", 10)
        limiter._defer("keys", "key_p", "spend", 1.5)
        await limiter.flush()
    assert await dead._holdings.slot("key_p", 10)
    before = await store.get("keys", "key_p")
    assert before is not None and set(before[SETTLED]) == {"inst_dead", "inst_live"}
    assert before["spend"] == 3.0
    assert set(await _held_slots(store)) == {"inst_dead", "inst_live"}

    pruner = Pruner(store, clock, live.instance, ttl=120)
    clock.advance(60)
    await live.heartbeat()
    assert await pruner.prune() == []  # not silent long enough yet
    clock.advance(61)
    await live.heartbeat()
    assert await pruner.prune() == ["inst_dead"]

    after = await store.get("keys", "key_p")
    assert after is not None and set(after[SETTLED]) == {"inst_live"}
    assert after["spend"] == 3.0  # what was settled stays counted, once
    assert set(await _held_slots(store)) == {"inst_live"}
    assert await store.get(INSTANCES, "inst_dead") is None
    assert await store.get(INSTANCES, "inst_live") is not None
    for collection in (WINDOWS, "groups"):
        assert not [
            d for d in await store.find(collection, {}) if "inst_dead" in d.get(SETTLED, {})
        ]

    # The live instance's next batches still count exactly once.
    live._defer("keys", "key_p", "spend", 1.0)
    await live.flush()
    final = await store.get("keys", "key_p")
    assert final is not None and final["spend"] == 4.0


async def test_an_instance_pruned_while_cut_off_holds_nothing_and_sends_no_stale_batch(
    store: Store, clock: FakeClock
) -> None:
    await store.insert("keys", {"_id": "key_p", "spend": 0.0})
    away = Limiter(store, clock, "inst_away", instance_ttl=120)
    live = Limiter(store, clock, "inst_live", instance_ttl=120)
    await away.heartbeat()
    assert await away._holdings.slot("key_p", 10)
    # Cut off past half the TTL: it keeps its batches rather than send them, since the
    # others may prune the marks that make a batch sent twice count once.
    clock.advance(61)
    away._defer("keys", "key_p", "spend", 2.0)
    await away.flush()
    assert (await store.get("keys", "key_p") or {})["spend"] == 0.0
    assert away._counters.unsure  # kept back, not sent

    clock.advance(60)
    await live.heartbeat()
    assert await Pruner(store, clock, live.instance, ttl=120).prune() == ["inst_away"]
    assert await _held_slots(store) == {}

    await away.heartbeat()  # back: finds itself pruned
    assert away._counters.unsure  # never sent, so still to send: it cannot count twice
    assert not away._holdings.slot_held("key_p", 10)
    away._free_slot("key_p")  # the request that held a slot ends: nothing to give back
    away._defer("keys", "key_p", "spend", 0.5)
    await away.flush()
    assert not away._counters.unsure
    assert (await store.get("keys", "key_p") or {})["spend"] == 2.5
    assert await _held_slots(store) == {}  # no negative count left behind


async def test_pruning_waits_for_a_heartbeat_that_got_in_first(
    store: Store, clock: FakeClock
) -> None:
    late = Limiter(store, clock, "inst_late", instance_ttl=120)
    await late.heartbeat()
    clock.advance(121)
    await late.heartbeat()  # just in time
    assert await Pruner(store, clock, "inst_other", ttl=120).prune() == []
    assert await store.get(INSTANCES, "inst_late") is not None


@pytest.fixture
def clock() -> FakeClock:
    from datetime import UTC, datetime

    return FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC) + timedelta(0))


async def test_group_and_master_key_changes_reach_another_instance(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    path = tmp_path / "shared.sqlite3"
    # No master key from the environment: the store's applies, and can be reset.
    one = await start_gateway(store=SQLiteStore(path), master_key=None, change_poll=0.5)
    other = await start_gateway(store=SQLiteStore(path), master_key=None, change_poll=0.5)
    assert other.ctx is not None and one.ctx is not None
    await one.ctx.groups.create(GroupCreate(name="team", rpm=10))
    assert (await other.ctx.limiter.group("team") or {})["rpm"] == 10  # cached there now

    applied = REGISTRY.get_sample_value(APPLIED, {"kind": GROUPS}) or 0.0
    await one.ctx.groups.update("team", GroupUpdate(rpm=20))
    deadline = time.monotonic() + CONVERGE
    ctx = other.ctx

    async def group_changed() -> bool:
        return (await ctx.limiter.group("team") or {}).get("rpm") == 20

    assert await _until(group_changed, deadline)
    assert (REGISTRY.get_sample_value(APPLIED, {"kind": GROUPS}) or 0.0) > applied

    before = ctx.master_key_hash
    store = SQLiteStore(path)
    await store.start()
    try:
        new_key = await reset_master_key(store)  # `conduit-tornado admin reset-master-key`
    finally:
        await store.close()
    deadline = time.monotonic() + CONVERGE

    async def master_key_changed() -> bool:
        return ctx.master_key_hash != before

    assert await _until(master_key_changed, deadline)
    assert ctx.is_master_key(new_key) and one.ctx.is_master_key(new_key)


async def test_a_batch_of_unknown_outcome_is_not_sent_again_once_its_marks_are_pruned(
    store: Store, clock: FakeClock
) -> None:
    await store.insert("keys", {"_id": "key_p", "spend": 0.0})
    lossy = AnswersLost(store)
    away = Limiter(cast(Store, lossy), clock, "inst_away", instance_ttl=120)
    await away.heartbeat()
    lossy.losing = {"increment_many"}  # taken by the store, but the answer is lost
    away._defer("keys", "key_p", "spend", 2.0)
    await away.flush()
    assert away._counters.unsure and (await store.get("keys", "key_p") or {})["spend"] == 2.0
    lossy.losing = set()

    clock.advance(121)  # cut off meanwhile; the others prune it
    live = Limiter(store, clock, "inst_live", instance_ttl=120)
    await live.heartbeat()
    assert await Pruner(store, clock, live.instance, ttl=120).prune() == ["inst_away"]
    after = await store.get("keys", "key_p")
    assert after is not None and "inst_away" not in after.get(SETTLED, {})

    await away.heartbeat()  # back: the mark that would make a resend harmless is gone
    await away.flush()
    assert not away._counters.unsure
    assert (await store.get("keys", "key_p") or {})["spend"] == 2.0  # counted once


async def test_an_instance_rejoins_only_once_its_pruning_is_done(
    store: Store, clock: FakeClock
) -> None:
    back = Limiter(store, clock, "inst_back", instance_ttl=120)
    await back.heartbeat()
    clock.advance(121)
    assert not back._may_send()  # silent past half the TTL: it holds its batches back
    # A live instance has claimed it and is removing its entries meanwhile.
    assert await store.update(INSTANCES, "inst_back", {"pruning": True}) is not None
    await back.heartbeat()  # refused, quietly: its batches still wait
    assert not back._may_send()
    seen = (await store.get(INSTANCES, "inst_back") or {}).get("seen")
    assert seen is not None and seen < clock.now() - timedelta(seconds=120)  # not refreshed
    await store.delete(INSTANCES, "inst_back")  # the pruning is done
    await back.heartbeat()
    assert back._may_send()
    assert await store.get(INSTANCES, "inst_back") is not None
