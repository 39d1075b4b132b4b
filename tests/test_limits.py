"""Rate limits, parallel limits and budgets: exact under concurrency, with OpenAI's 429s."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from typing import Any, cast

import httpx2
import openai
import pytest

from conduit_tornado import Gateway
from conduit_tornado.admission.limits import Limiter
from conduit_tornado.core.errors import ApiError
from conduit_tornado.store import Store, StoreUnavailable
from tests.conftest import MASTER_KEY, FakeClock, clear_of_minute_end, settled
from tests.proxy_setup import Wired, WiredFactory
from tests.store_faults import AnswersLost, Down

pytestmark = pytest.mark.asyncio
HI = [{"role": "user", "content": "Say hello"}]


async def _chat(
    gw: Gateway, key: str, http: httpx2.AsyncClient | None = None, **extra: Any
) -> httpx2.Response:
    body = {"model": extra.pop("model", "gpt"), "messages": HI, **extra}
    if http is not None:
        return await http.post(
            gw.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        )
    async with httpx2.AsyncClient(timeout=30) as client:
        return await client.post(
            gw.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        )


async def test_rpm_is_exact_under_concurrency(wired_with: WiredFactory, store: Store) -> None:
    # A frozen clock: a burst that crossed a real minute boundary would rightly get a
    # second window of 50 (seen as an occasional 100/100 split).
    w = await wired_with(store=store, clock=FakeClock(datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)))
    gw = w.gateway
    key = (await w.admin.create_key(name="rpm50", rpm=50))["key"]
    limits = httpx2.Limits(max_connections=200)
    async with httpx2.AsyncClient(timeout=60, limits=limits) as http:
        responses = await asyncio.gather(*(_chat(gw, key, http, model="mock") for _ in range(200)))
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: 50, 429: 150}
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert w.fake.requests == []  # the mock provider answered; nothing leaked upstream


async def test_window_rolls_over_on_the_clock(
    wired_with: WiredFactory,
) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC))
    w = await wired_with(clock=clock)
    gw = w.gateway
    key = (await w.admin.create_key(name="k", rpm=2, rpd=3))["key"]
    first = await _chat(gw, key, model="mock")
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-reset-requests"] == "30s"
    assert (await _chat(gw, key, model="mock")).status_code == 200
    third = await _chat(gw, key, model="mock")
    assert third.status_code == 429 and third.headers["Retry-After"] == "30"
    clock.advance(30)  # the next minute: a fresh window
    assert (await _chat(gw, key, model="mock")).status_code == 200
    daily = await _chat(gw, key, model="mock")  # the fourth today: rpd=3 refuses it
    assert daily.status_code == 429 and daily.json()["error"]["code"] == "rate_limit_exceeded"
    assert "per day" in daily.json()["error"]["message"]
    assert int(daily.headers["Retry-After"]) == 12 * 3600 - 60
    assert daily.headers["x-should-retry"] == "false"  # beyond what an SDK retry can wait
    clock.advance(12 * 3600)
    assert (await _chat(gw, key, model="mock")).status_code == 200


async def test_tpm_reserves_then_reconciles(wired_store: Wired) -> None:
    w = wired_store
    key = (await w.admin.create_key(name="t", tpm=100))["key"]
    ok = await _chat(w.gateway, key, max_tokens=10)
    assert ok.status_code == 200 and ok.headers["x-ratelimit-limit-tokens"] == "100"
    ctx = w.gateway.ctx
    assert ctx is not None
    await settled(w.gateway)
    windows = await ctx.store.find("limit_windows", {})
    assert len(windows) == 1
    assert windows[0]["t"] == 11 + 4  # reconciled to real usage, not the reservation
    big = await _chat(w.gateway, key, max_tokens=200)
    assert big.status_code == 429 and big.json()["error"]["code"] == "tokens_rate_limit_exceeded"
    assert "tokens per minute" in big.json()["error"]["message"]
    assert (await ctx.store.find("limit_windows", {}))[0]["t"] == 15  # the refusal reserved nothing


async def test_parallel_limit_and_release(wired: Wired) -> None:
    key = (await wired.admin.create_key(name="p", max_parallel=1))["key"]
    wired.fake.then(delay=0.5)
    slow = asyncio.ensure_future(_chat(wired.gateway, key))
    for _ in range(500):  # until the slow one holds its slot (it has reached the provider)
        if wired.fake.requests:
            break
        await asyncio.sleep(0.01)
    busy = await _chat(wired.gateway, key)
    assert busy.status_code == 429 and busy.json()["error"]["code"] == "parallel_limit_exceeded"
    assert busy.headers["Retry-After"] == "1"
    assert (await slow).status_code == 200
    await settled(wired.gateway)
    assert (await _chat(wired.gateway, key)).status_code == 200  # the slot came back


async def test_slots_of_a_dead_instance_do_not_count(wired_store: Wired) -> None:
    w = wired_store
    created = await w.admin.create_key(name="p", max_parallel=2)
    ctx = w.gateway.ctx
    assert ctx is not None
    stale = datetime(2020, 1, 1, tzinfo=UTC)
    await ctx.store.insert("instances", {"_id": "inst_crashed", "seen": stale})
    await ctx.store.increment("parallel", created["id"], {"by.inst_crashed": 5})
    assert (await _chat(w.gateway, created["key"])).status_code == 200


async def test_budget_exhausted_mid_stream_finishes_and_bills(wired_store: Wired) -> None:
    w = wired_store
    created = await w.admin.create_key(name="b", max_budget=0.00001)
    key = created["key"]
    async with httpx2.AsyncClient(timeout=30) as http:
        r = await http.post(
            w.gateway.url + "/v1/chat/completions",
            json={"model": "gpt", "messages": HI, "stream": True},
            headers={"Authorization": f"Bearer {key}"},
        )
    assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")  # not cut off
    await settled(w.gateway)
    spent = (await w.admin.get_key(created["id"]))["spend"]
    assert spent > 0.00001  # billed in full, past the budget
    refused = await _chat(w.gateway, key)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
    assert refused.headers["x-should-retry"] == "false"
    # The admin resets the spend: the key works again.
    async with httpx2.AsyncClient(
        base_url=w.gateway.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}
    ) as http:
        reset = await http.post(f"/admin/v1/keys/{created['id']}/spend", json={"spend": 0})
        assert reset.status_code == 200 and reset.json()["spend"] == 0
        bad = await http.post(f"/admin/v1/keys/{created['id']}/spend", json={"spend": 1, "add": 1})
        assert bad.status_code == 400
    assert (await _chat(w.gateway, key)).status_code == 200


async def test_own_charge_refuses_the_next_request_before_the_batch_is_written(
    wired_store: Wired,
) -> None:
    # The trial's overshoot: back-to-back sequential requests each costing more than the
    # budget. The first answer's cost counts at once, not after the settlement batch.
    w = wired_store
    created = await w.admin.create_key(name="tight", max_budget=0.00001)
    async with httpx2.AsyncClient(timeout=30) as http:
        answers = [await _chat(w.gateway, created["key"], http) for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 429, 429, 429]
    assert answers[1].json()["error"]["code"] == "budget_exceeded"
    cost = float(answers[0].headers["x-conduit-cost-usd"])
    assert cost > 0.00001
    await settled(w.gateway)
    assert (await w.admin.get_key(created["id"]))["spend"] == pytest.approx(cost)
    # Once written, the charge counts once: the store's spend, not it plus what was owed.
    refused = await _chat(w.gateway, created["key"])
    assert f"spent ${cost:.4f}" in refused.json()["error"]["message"]


@pytest.mark.parametrize("route", ["chat", "responses"])
async def test_a_streamed_answers_charge_counts_before_the_next_request(
    wired: Wired, route: str
) -> None:
    created = await wired.admin.create_key(name="tight", max_budget=0.00001)
    client = openai.AsyncOpenAI(
        base_url=wired.gateway.url + "/v1", api_key=created["key"], max_retries=0
    )
    statuses = []
    async with client:
        for _ in range(3):  # each the moment the previous stream's last event is read
            try:
                if route == "chat":
                    stream: Any = await client.chat.completions.create(
                        model="gpt", messages=HI, stream=True
                    )
                else:
                    stream = await client.responses.create(model="gpt", input="hi", stream=True)
                async for _ in stream:
                    pass
                statuses.append(200)
            except openai.APIStatusError as exc:
                statuses.append(exc.status_code)
    assert statuses == [200, 429, 429]


@pytest.mark.parametrize("spend_ttl", [1.0, 0.0])
async def test_own_charges_count_once_whatever_their_write_is_doing(
    store: Store, spend_ttl: float
) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    key = {"_id": "key_o", "name": "o", "created_at": clock.now(), "max_budget": 1.0}
    await store.insert("keys", key)
    lossy = AnswersLost(store)
    limiter = Limiter(cast(Store, lossy), clock, "inst_o", spend_ttl=spend_ttl)
    budget = limiter.budgets

    async def spent() -> float:
        """The spend a refusal reports (what admission counts)."""
        try:
            await limiter.release(await limiter.admit(key, "gpt", None, 0))
        except ApiError as exc:
            return float(exc.message.split("spent $")[1].split(" ")[0])
        return -1.0  # admitted: under the budget

    limiter.settle(await limiter.admit(key, "gpt", None, 0), None, 0.6)
    assert await spent() == -1.0  # 0.6 of 1.0
    limiter.settle(await limiter.admit(key, "gpt", None, 0), None, 0.6)
    assert await spent() == pytest.approx(1.2)  # settled, not written: counted
    lossy.losing = {"increment"}  # written, its answer lost: unsure, still counted once
    await limiter.flush()
    assert lossy.lost == 1 and await spent() == pytest.approx(1.2)
    lossy.losing = set()
    await limiter.flush()  # sent again, taken once: the store's spend, nothing owed
    assert (await store.get("keys", "key_o") or {})["spend"] == pytest.approx(1.2)
    assert limiter._owed(("keys", "key_o")) == 0.0
    assert await spent() == pytest.approx(1.2)
    await budget.adjust_spend("keys", key, spend=0.0, add=None)
    assert await spent() == -1.0


class HeldReads:
    """A store whose ``get`` answers (with what it read at once) only when ``hold`` is set."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.hold: asyncio.Event | None = None
        self.read_done = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        doc = await self._store.get(*args, **kwargs)
        hold, self.hold = self.hold, None
        if hold is not None:
            self.read_done.set()
            await hold.wait()
        return doc


async def test_a_spend_read_overtaken_by_a_charges_answer_is_not_kept(store: Store) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    key = {"_id": "key_r", "name": "r", "created_at": clock.now(), "max_budget": 1.0}
    await store.insert("keys", key)
    held = HeldReads(store)
    limiter = Limiter(cast(Store, held), clock, "inst_r", spend_ttl=60.0)
    limiter.settle(await limiter.admit(key, "gpt", None, 0), None, 0.7)
    limiter.budgets.forget_spent("keys", "key_r")
    # A check reads the spend (0: the charge is not written yet) and its answer comes
    # after the charge's write was answered and left what is owed: the old read must not
    # hide the charge for the TTL.
    held.hold = release = asyncio.Event()
    read = asyncio.ensure_future(limiter.budgets._read_spent("keys", "key_r"))
    await held.read_done.wait()  # the read reached the store before the write
    await limiter.flush()
    release.set()
    assert (await read)["spend"] == pytest.approx(0.7)  # the write's answer, not the read's
    limiter.settle(await limiter.admit(key, "gpt", None, 0), None, 0.4)
    with pytest.raises(ApiError) as refused:
        await limiter.admit(key, "gpt", None, 0)
    assert "spent $1.1000" in refused.value.message


@pytest.mark.parametrize("spend_ttl", [1.0, 0.0])
async def test_another_instances_spend_counts_within_the_spend_ttl(
    store: Store, spend_ttl: float
) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    key = {"_id": "key_b", "name": "b", "created_at": clock.now(), "max_budget": 1.0}
    await store.insert("keys", key)
    here = Limiter(store, clock, "inst_here", spend_ttl=spend_ttl)
    there = Limiter(store, clock, "inst_there", spend_ttl=spend_ttl)
    await here.release(await here.admit(key, "gpt", None, 0))  # reads (and caches) spend 0
    there.settle(await there.admit(key, "gpt", None, 0), None, 2.0)  # spends past it
    await there.flush()
    with pytest.raises(ApiError) as own:
        await there.admit(key, "gpt", None, 0)  # its own charge counts at once
    assert own.value.code == "budget_exceeded"
    if spend_ttl:
        await here.release(await here.admit(key, "gpt", None, 0))  # still within the TTL
        clock.advance(spend_ttl)
    with pytest.raises(ApiError) as seen:
        await here.admit(key, "gpt", None, 0)
    assert seen.value.code == "budget_exceeded"
    # An admin reset through this instance applies here at once, cache or not.
    await here.budgets.adjust_spend("keys", key, spend=0.0, add=None)
    await here.release(await here.admit(key, "gpt", None, 0))


async def test_monthly_budget_resets_with_the_month(
    wired_with: WiredFactory,
) -> None:
    clock = FakeClock(datetime(2026, 1, 31, 23, 59, 0, tzinfo=UTC))
    w = await wired_with(clock=clock)
    gw = w.gateway
    key = (await w.admin.create_key(name="m", max_budget=0.00001, budget_duration="monthly"))["key"]
    assert (await _chat(gw, key)).status_code == 200
    await settled(gw)
    refused = await _chat(gw, key)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "60"
    assert "x-should-retry" not in refused.headers  # a minute: the SDK may wait for it
    clock.advance(60)
    assert (await _chat(gw, key)).status_code == 200


async def test_group_budget_is_shared(wired_store: Wired) -> None:
    w = wired_store
    async with httpx2.AsyncClient(
        base_url=w.gateway.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}
    ) as http:
        created = await http.post(
            "/admin/v1/groups", json={"name": "research", "max_budget": 0.00001}
        )
        assert created.status_code == 201
        a = (await http.post("/admin/v1/keys", json={"name": "a", "group": "research"})).json()[
            "key"
        ]
        b = (await http.post("/admin/v1/keys", json={"name": "b", "group": "research"})).json()[
            "key"
        ]
        assert (await _chat(w.gateway, a)).status_code == 200
        await settled(w.gateway)
        refused = await _chat(w.gateway, b)  # b never spent: the group did
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
        assert "group 'research'" in refused.json()["error"]["message"]
        group = (await http.get("/admin/v1/groups/research")).json()
        assert group["spend"] > 0.00001
        assert (
            await http.delete("/admin/v1/groups/research")
        ).status_code == 409  # keys still in it
        await http.post("/admin/v1/groups/research/spend", json={"spend": 0})
        assert (await _chat(w.gateway, b)).status_code == 200


async def test_group_rate_limit_spans_its_keys(wired: Wired) -> None:
    await clear_of_minute_end()
    async with httpx2.AsyncClient(
        base_url=wired.gateway.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}
    ) as http:
        await http.post("/admin/v1/groups", json={"name": "g", "rpm": 2})
        a = (await http.post("/admin/v1/keys", json={"name": "a", "group": "g"})).json()["key"]
        b = (await http.post("/admin/v1/keys", json={"name": "b", "group": "g"})).json()["key"]
    assert [(await _chat(wired.gateway, k, model="mock")).status_code for k in (a, b, a)] == [
        200,
        200,
        429,
    ]


async def test_per_user_limits_name_the_user(wired: Wired) -> None:
    await clear_of_minute_end()
    key = (await wired.admin.create_key(name="u", user_limits={"rpm": 1, "max_budget": 1.0}))["key"]
    assert (await _chat(wired.gateway, key, model="mock", user="alice")).status_code == 200
    refused = await _chat(wired.gateway, key, model="mock", user="alice")
    assert (
        refused.status_code == 429 and refused.json()["error"]["code"] == "user_rate_limit_exceeded"
    )
    assert "user 'alice'" in refused.json()["error"]["message"]
    assert (
        await _chat(wired.gateway, key, model="mock", user="bob")
    ).status_code == 200  # bob has his own
    tight = (await wired.admin.create_key(name="ub", user_limits={"max_budget": 0.00001}))["key"]
    assert (await _chat(wired.gateway, tight, user="carol")).status_code == 200
    await settled(wired.gateway)
    broke = await _chat(wired.gateway, tight, user="carol")
    assert broke.status_code == 429 and broke.json()["error"]["code"] == "user_budget_exceeded"
    assert (await _chat(wired.gateway, tight, user="dave")).status_code == 200


async def test_per_model_limits(wired: Wired) -> None:
    await clear_of_minute_end()
    key = (await wired.admin.create_key(name="pm", model_limits={"gpt": {"rpm": 1}}))["key"]
    assert (await _chat(wired.gateway, key, model="gpt")).status_code == 200
    assert (await _chat(wired.gateway, key, model="gpt")).status_code == 429
    assert (await _chat(wired.gateway, key, model="mock")).status_code == 200


async def test_every_paid_route_counts(wired: Wired) -> None:
    await clear_of_minute_end()
    key = (await wired.admin.create_key(name="all", rpm=3))["key"]
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx2.AsyncClient(base_url=wired.gateway.url) as http:
        assert (
            await http.post(
                "/v1/chat/completions", json={"model": "mock", "messages": HI}, headers=auth
            )
        ).status_code == 200
        assert (
            await http.post("/v1/completions", json={"model": "gpt", "prompt": "x"}, headers=auth)
        ).status_code == 200
        assert (
            await http.post("/v1/embeddings", json={"model": "emb", "input": "x"}, headers=auth)
        ).status_code == 200
        assert (
            await http.post("/v1/embeddings", json={"model": "emb", "input": "x"}, headers=auth)
        ).status_code == 429
        assert (
            await http.get("/v1/models", headers=auth)
        ).status_code == 200  # free routes are not counted


class Counted:
    """A real store that counts the operations made through it."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.ops: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.ops[name] += 1
            return await attr(*args, **kwargs)

        return counted


async def _admitted(limiter: Limiter, key: dict[str, Any]) -> bool:
    try:
        await limiter.admit(key, "gpt", None, 0)
    except ApiError:
        return False
    return True


async def test_window_leases_stay_exact_with_few_round_trips(store: Store) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, 10, tzinfo=UTC))
    counted = Counted(store)
    a = Limiter(cast(Store, counted), clock, "inst_a")
    b = Limiter(cast(Store, counted), clock, "inst_b")
    key = {"_id": "key_l", "name": "l", "created_at": clock.now(), "rpm": 1000}
    # Two instances, 500 requests each at once: leases of 20 (a fiftieth of 1000).
    admitted = await asyncio.gather(*(_admitted(a if i % 2 else b, key) for i in range(1000)))
    assert all(admitted)
    assert counted.ops["increment"] == 1000 // 20  # one store operation per lease
    refused = await asyncio.gather(*(_admitted(a if i % 2 else b, key) for i in range(50)))
    assert not any(refused)  # the window is full, across both instances
    windows = await store.find("limit_windows", {})
    assert [w["r"] for w in windows] == [1000]
    clock.advance(60)  # a new window, new leases
    assert await _admitted(a, key) and await _admitted(b, key)


async def test_small_limits_count_every_request_in_the_store(store: Store) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, 10, tzinfo=UTC))
    counted = Counted(store)
    a = Limiter(cast(Store, counted), clock, "inst_a")
    b = Limiter(cast(Store, counted), clock, "inst_b")
    key = {"_id": "key_s", "name": "s", "created_at": clock.now(), "rpm": 99, "tpm": 10_000}
    results = await asyncio.gather(*(_admitted(a if i % 2 else b, key) for i in range(120)))
    assert sum(results) == 99  # below 100: no leases, so nothing is held back unused
    windows = await store.find("limit_windows", {})
    assert [w["r"] for w in windows] == [99]


async def _stored_key(store: Store, clock: FakeClock, key_id: str) -> dict[str, Any]:
    """A key with tpm, max_parallel and a budget, stored as the limiter finds it."""
    key = {
        "_id": key_id,
        "name": key_id,
        "created_at": clock.now(),
        "tpm": 1_000_000,
        "max_parallel": 500,
        "max_budget": 100.0,
    }
    await store.insert("keys", {**key, "spend": 0.0, "period_start": key["created_at"]})
    return key


async def _hundred_settled(store: Store, key_id: str, instance: str) -> None:
    """What 100 admitted requests of a _stored_key leave once settled and flushed, with 4
    of their 10 reserved tokens used and a cent each."""
    parallel = await store.get("parallel", key_id)
    assert parallel is not None and parallel["by"][instance] == 9  # idle: keeps < a lease
    # Two token leases of 64 requests' worth (640) were counted; the reservations came
    # back less what was used: 6 of each request's 10 tokens.
    assert [w["t"] for w in await store.find("limit_windows", {})] == [2 * 640 - 100 * 6]
    spent = await store.get("keys", key_id)
    assert spent is not None and spent["spend"] == pytest.approx(1.0)


async def test_settlements_are_written_behind_in_one_batch(store: Store) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, 10, tzinfo=UTC))
    key = await _stored_key(store, clock, "key_w")
    counted = Counted(store)
    charged: list[Any] = []

    async def on_charges(charges: list[Any]) -> None:
        charged.extend(charges)

    limiter = Limiter(cast(Store, counted), clock, "inst_w", on_charges=on_charges)
    grants = [await limiter.admit(key, "gpt", None, 10) for _ in range(100)]
    parallel = await store.get("parallel", "key_w")
    assert parallel is not None and parallel["by"]["inst_w"] == 100  # 10 leases of 10 slots
    before = counted.ops.copy()
    for grant in grants:
        limiter.settle(grant, 4, 0.01)  # 4 tokens used of 10 reserved; a cent each
    assert counted.ops == before  # nothing is written on the request path
    for _ in range(500):  # written behind, within a few SETTLE_DELAYs
        parallel = await store.get("parallel", "key_w")
        if parallel is not None and parallel["by"]["inst_w"] < 100:
            break
        await asyncio.sleep(0.01)
    await limiter.flush()
    await _hundred_settled(store, "key_w", "inst_w")
    written = counted.ops - before
    assert written["increment_many"] == 2  # parallel slots and tpm windows: one batch each
    assert written["increment"] == 1  # all 100 charges to the key: one spend update
    assert [(c.before, c.after) for c in charged] == [(0.0, pytest.approx(1.0))]
    await limiter.heartbeat()  # the slots were used since the last heartbeat: kept
    await limiter.flush()
    parallel = await store.get("parallel", "key_w")
    assert parallel is not None and parallel["by"]["inst_w"] == 9
    await limiter.heartbeat()  # unused for a whole heartbeat: all given back
    await limiter.flush()
    parallel = await store.get("parallel", "key_w")
    assert parallel is not None and parallel["by"]["inst_w"] == 0


async def test_parallel_slots_are_reused_here_and_returned_for_others(store: Store) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, 10, tzinfo=UTC))
    a, b = Limiter(store, clock, "inst_a"), Limiter(store, clock, "inst_b")
    for limiter in (a, b, a):  # each sees the other alive
        await limiter.heartbeat()
    key = {"_id": "key_p", "name": "p", "created_at": clock.now(), "max_parallel": 1}
    held = await a.admit(key, "gpt", None, 0)
    with pytest.raises(ApiError) as busy:
        await b.admit(key, "gpt", None, 0)
    assert busy.value.code == "parallel_limit_exceeded"
    a.settle(held, None, None)
    again = await a.admit(key, "gpt", None, 0)  # its own freed slot: at once, no 429
    a.settle(again, None, None)
    for _ in range(500):  # the next settlement batch hands the idle slot back
        try:
            b.settle(await b.admit(key, "gpt", None, 0), None, None)
            break
        except ApiError:
            await asyncio.sleep(0.01)
    else:
        raise AssertionError("the slot never came back for the other instance")
    await a.flush()
    await b.flush()
    parallel = await store.get("parallel", "key_p")
    assert parallel is not None and parallel["by"] == {"inst_a": 0, "inst_b": 0}


async def test_a_changed_limit_voids_a_lease_and_close_gives_capacity_back(store: Store) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, 10, tzinfo=UTC))
    limiter = Limiter(store, clock, "inst_c")
    key = {"_id": "key_c", "name": "c", "created_at": clock.now(), "rpm": 1000}
    assert await _admitted(limiter, key)  # leases 20, uses 1
    lowered = {**key, "rpm": 10}  # the admin lowers the limit
    assert not await _admitted(limiter, lowered)  # 20 counted already: the rest is void
    kept = {**key, "rpm": 1000, "max_parallel": 500}
    grants = [await limiter.admit(kept, "gpt", None, 0) for _ in range(3)]
    for grant in grants:
        limiter.settle(grant, None, None)
    await limiter.close()  # shutting down: unused lease and idle slots go back
    windows = await store.find("limit_windows", {})
    # The voided lease stays counted (20); of the next one, only the 3 used remain.
    assert [w["r"] for w in windows] == [20 + 3]
    parallel = await store.get("parallel", "key_c")
    assert parallel is not None and parallel["by"]["inst_c"] == 0


async def test_a_store_failure_part_way_gives_back_what_admission_took(store: Store) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, 10, tzinfo=UTC))
    faulty = Down(store, only="|d|")  # day windows: the last check of an admission
    limiter = Limiter(cast(Store, faulty), clock, "inst_f")
    key = {"_id": "key_f", "name": "f", "created_at": clock.now(), "rpm": 2, "rpd": 1000}
    faulty.down = True  # the minute window is counted, then the day window fails
    for _ in range(3):
        with pytest.raises(StoreUnavailable):
            await limiter.admit(key, "gpt", None, 0)
    faulty.down = False
    assert await _admitted(limiter, key) and await _admitted(limiter, key)
    assert not await _admitted(limiter, key)  # the limit itself still holds


async def test_a_settlement_whose_answer_was_lost_counts_once(store: Store) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, 10, tzinfo=UTC))
    key = await _stored_key(store, clock, "key_x")
    lossy = AnswersLost(store)
    limiter = Limiter(cast(Store, lossy), clock, "inst_x")
    grants = [await limiter.admit(key, "gpt", None, 10) for _ in range(100)]
    for grant in grants:
        limiter.settle(grant, 4, 0.01)
    # The settlement reaches the store, and its answers do not: first a counter batch's
    # (a round stops at the first outage; the rest waits), then the spend's, twice.
    lossy.losing = {"increment_many"}
    await limiter.flush()
    lossy.losing = {"increment"}
    await limiter.flush()
    await limiter.flush()
    assert lossy.lost == 3
    lossy.losing = set()
    await limiter.flush()
    await _hundred_settled(store, "key_x", "inst_x")  # as if each was written once


async def test_a_group_read_before_an_outage_still_serves(store: Store) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, 10, tzinfo=UTC))
    await store.insert("groups", {"_id": "team", "created_at": clock.now(), "rpm": 10})
    flaky = Down(store)
    limiter = Limiter(cast(Store, flaky), clock, "inst_g")
    key = {"_id": "key_g", "name": "g", "created_at": clock.now(), "group": "team"}
    assert await _admitted(limiter, key)
    clock.advance(limiter.group_ttl + 1)  # the group's cache time is over
    flaky.down = True
    assert await limiter.group("team") == await store.get("groups", "team")
    with pytest.raises(StoreUnavailable):  # a group never read cannot be made up
        await limiter.group("other")
