"""Rate limits, parallel limits and budgets that hold under concurrency and across instances.

Every decision is an atomic store operation whose answer is the decision:

* rpm / rpd / tpm: a conditional ``$inc`` with upsert on a window document
  (``limit_windows``) whose filter carries the limit (``r <= rpm - n``, ``t <= tpm - n``):
  the server applies it atomically or not at all, so the window never counts more than its
  limit however many instances race, and a refused request counts nothing. (The decision
  never relies on the returned document: jongodb, measured, sometimes returns a post-image
  read after a concurrent update.) An instance takes capacity in leases: with a limit of
  100 or more it takes a fiftieth of it (at most 64 requests) in one operation and admits
  from that without a round trip, falling back to one request at a time when a whole lease
  no longer fits. So the count stays exact, and an instance leaves at most 2% of a
  window's limit unused at its end; below 100 every request is its own operation. tpm
  reserves an estimate (prompt + max_tokens) and is reconciled afterwards. Increments
  already made for other subjects of a refused request are given back.
* max_parallel: one document per key (or group) with a counter per gateway instance of
  the slots it holds; the total counts only instances whose heartbeat is fresh, so a
  crashed instance's slots free themselves. An instance takes slots as it needs them (a
  fiftieth of the limit at a time, at most 64; one at a time below 100), gives back any
  it took past the limit at once, reuses the slots its finished requests free, and
  returns idle ones with the next settlement batch (keeping fewer than a lease's worth,
  and none once the key or group has gone a heartbeat without a request).
* budgets: the current period's spend lives on the key / group document (and per end user
  in ``user_budgets``); a request starts only if the spend is under budget, and its cost
  is added atomically when it ends, resetting at the period boundary. The spend a check
  reads is cached per instance for ``spend_ttl`` seconds: this instance's own charges
  update the cache when written, other instances' show within the TTL. (A check before
  the request and a charge after it are never exact across concurrent requests anyway;
  the TTL bounds how much later another instance's spend is seen.)

Settling a request (freeing its parallel slot, reconciling its tpm reservation, charging
its cost) needs no answer, so it is written behind: changes are summed per document for
SETTLE_DELAY and go out together, one bulk write per collection and one charge per budget
account, whatever the request rate. On MongoDB a store operation costs ~0.35 ms of
PyMongo CPU on our 2-core machine, more than the whole memory-store request path, so the
hot path avoids per-request round trips wherever the guarantees above allow.

A key with no limits costs no store operation here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from .clock import Clock
from .errors import ApiError
from .periods import budget_period, day_window, minute_window, openai_duration, seconds_until
from .store import Doc, Store

log = logging.getLogger("conduit.limits")
T = TypeVar("T")
WINDOWS = "limit_windows"
PARALLEL = "parallel"
INSTANCES = "instances"
USER_BUDGETS = "user_budgets"
# What a budget check reads of an account's document (never the whole of it); the
# budget's own settings come from the key or group document the request already holds.
SPENT = ("spend", "period_start")
SPEND = ("spend",)
_SPENT_CACHE_MAX = 100_000
HEARTBEAT_SECONDS = 5.0
INSTANCE_TTL = timedelta(seconds=20)
SDK_RETRY_HORIZON = 120  # the openai SDK waits at most this long for Retry-After
LEASE_SHARE = 50  # a lease takes this fraction of a window's limit ...
LEASE_MAX = 64  # ... and at most this many requests
SETTLE_DELAY = 0.01  # seconds settlements gather before they are written together


@dataclass(slots=True)
class Held:
    """A reservation to undo or reconcile: ``amount`` added to ``field`` of a document."""

    collection: str
    id: str
    field: str
    amount: float


@dataclass(frozen=True, slots=True)
class Budget:
    """A spend account a request is charged to: a key, a group, or one end user of a key."""

    collection: str
    id: str
    kind: str  # "key" | "group" | "user"
    name: str
    duration: str | None
    anchor: datetime
    max_budget: float | None
    upsert: bool = False  # user accounts are created on first spend


@dataclass(slots=True)
class Charge:
    budget: Budget
    before: float
    after: float
    period_start: datetime


@dataclass(slots=True)
class Lease:
    """Capacity of one window document this instance has counted in the store and not
    used yet ({field: amount}), and the document's counts when last leased."""

    end: datetime
    limits: dict[str, int]  # what it was taken under: a changed limit voids it
    have: dict[str, int] = field(default_factory=dict)
    counted: dict[str, int] = field(default_factory=dict)

    def take(self, need: dict[str, int]) -> bool:
        have = self.have
        for name, amount in need.items():
            if have.get(name, 0) < amount:
                return False
        for name, amount in need.items():
            if amount:
                have[name] -= amount
        return True

    def remaining(self, name: str, limit: int) -> int:
        """What this instance can tell a client is left (OpenAI's x-ratelimit-remaining)."""
        return max(0, limit - self.counted.get(name, 0) + self.have.get(name, 0))


@dataclass(slots=True)
class Slots:
    """Parallel slots of one key or group this instance holds (counted in the store)."""

    limit: int
    held: int = 0
    in_use: int = 0
    used: bool = True  # since the last heartbeat


@dataclass(slots=True)
class Grant:
    """What an admitted request holds until it ends."""

    held: list[Held] = field(default_factory=list)
    tokens_reserved: list[Held] = field(default_factory=list)
    parallel: list[Held] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    budgets: list[Budget] = field(default_factory=list)
    settled: bool = False


@dataclass(frozen=True, slots=True)
class Subject:
    """Something limits apply to: a key, a key's use of one model, a group, an end user."""

    id: str
    label: str  # for messages: "key", "group 'research'", "user 'bob'"
    code_prefix: str  # "" or "user_"
    rpm: int | None = None
    rpd: int | None = None
    tpm: int | None = None

    @classmethod
    def of(cls, id: str, label: str, limits: Doc, code_prefix: str = "") -> Subject:
        """A subject whose rpm / rpd / tpm come from a key, group or limits document."""
        return cls(id, label, code_prefix, limits.get("rpm"), limits.get("rpd"), limits.get("tpm"))


async def _in_turn(
    flights: dict[str, asyncio.Future[None]], doc_id: str, work: Callable[[], Awaitable[T]]
) -> tuple[bool, T | None]:
    """One store operation per document at a time: wait for the one in flight and return
    (False, None), or run ``work`` as it and return (True, its result). The caller then
    takes what it needs in turn with the others (what ``work`` added may go to another
    request first). Shielded: a request cancelled meanwhile must not lose what the store
    counted for this instance."""
    flight = flights.get(doc_id)
    if flight is not None:
        await flight
        return False, None
    flight = flights[doc_id] = asyncio.get_running_loop().create_future()
    try:
        return True, await asyncio.shield(work())
    finally:
        del flights[doc_id]
        flight.set_result(None)


def refusal(code: str, message: str, retry_after: int) -> ApiError:
    headers = {"Retry-After": str(retry_after)}
    if retry_after > SDK_RETRY_HORIZON:
        headers["x-should-retry"] = "false"  # waiting inside one call cannot help
    return ApiError(429, message, code=code, type="rate_limit_error", headers=headers)


class Limiter:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        instance_id: str | None = None,
        *,
        spend_ttl: float = 1.0,
    ) -> None:
        self._store = store
        self._clock = clock
        self.instance = instance_id or "inst_" + secrets.token_hex(6)
        self._live: set[str] = {self.instance}
        self._groups: dict[str, tuple[float, Doc | None]] = {}
        self.group_ttl = 5.0
        self.spend_ttl = spend_ttl
        self._spent: dict[tuple[str, str], tuple[float, Doc]] = {}
        self._leases: dict[str, Lease] = {}
        self._leasing: dict[str, asyncio.Future[None]] = {}
        self._leases_pruned = 0.0  # monotonic time ended leases were last dropped
        self._minute_cache: tuple[datetime, datetime, str] | None = None
        self._slots: dict[str, Slots] = {}
        self._growing: dict[str, asyncio.Future[None]] = {}
        self._idle: set[str] = set()  # slot documents with slots freed since the last batch
        # Written behind (see the module docstring): {collection: {id: {field: amount}}}
        # and {budget account: cost}, with the timer or task that writes them.
        self._deferred: dict[str, dict[str, dict[str, float]]] = {}
        self._charges: dict[Budget, float] = {}
        self._settle_timer: asyncio.TimerHandle | None = None
        self._settling: asyncio.Task[None] | None = None
        #: Told of every charge written (budget alerts).
        self.on_charges: Callable[[list[Charge]], Awaitable[None]] | None = None

    # -- instances ------------------------------------------------------------------------

    async def heartbeat(self) -> None:
        now = self._clock.now()
        if await self._store.update(INSTANCES, self.instance, {"seen": now}) is None:
            await self._store.insert(INSTANCES, {"_id": self.instance, "seen": now})
        live = await self._store.find(
            INSTANCES, {"seen": {"$gte": now - INSTANCE_TTL}}, limit=10_000
        )
        self._live = {d["_id"] for d in live} | {self.instance}
        self._sweep_slots()

    async def run_heartbeat(self) -> None:
        while True:
            try:
                await self.heartbeat()
            except Exception:
                log.exception("instance heartbeat failed")
            await asyncio.sleep(HEARTBEAT_SECONDS)

    # -- groups ---------------------------------------------------------------------------

    async def group(self, name: str) -> Doc | None:
        now = self._clock.monotonic()
        hit = self._groups.get(name)
        if hit is not None and hit[0] > now:
            return hit[1]
        doc = await self._store.get("groups", name)
        self._groups[name] = (now + self.group_ttl, doc)
        return doc

    def forget_group(self, name: str) -> None:
        self._groups.pop(name, None)

    # -- admission ------------------------------------------------------------------------

    async def admit(self, key: Doc, model: str, user: str | None, tokens: int) -> Grant:
        """Reserve everything this request needs, or raise 429 having reserved nothing."""
        grant = Grant()
        group = await self.group(key["group"]) if key.get("group") else None
        subjects = self._subjects(key, model, user, group)
        try:
            now = self._clock.now()  # one instant for every check of this request
            await self._check_budgets(grant, key, group, user, now)
            for subject in subjects:
                await self._windows(grant, subject, tokens, subject.id == key["_id"], now)
            if key.get("max_parallel"):
                await self._parallel(grant, key["_id"], int(key["max_parallel"]), "this key")
            if group is not None and group.get("max_parallel"):
                await self._parallel(
                    grant,
                    f"group/{group['_id']}",
                    int(group["max_parallel"]),
                    f"group '{group['_id']}'",
                )
        except ApiError:
            await self._undo(grant.held + grant.parallel)
            raise
        return grant

    def _subjects(self, key: Doc, model: str, user: str | None, group: Doc | None) -> list[Subject]:
        subjects = [Subject.of(key["_id"], "this key", key)]
        per_model = (key.get("model_limits") or {}).get(model)
        if per_model:
            subjects.append(
                Subject.of(f"{key['_id']}/m/{model}", f"this key on model '{model}'", per_model)
            )
        if group is not None:
            subjects.append(Subject.of(f"group/{group['_id']}", f"group '{group['_id']}'", group))
        per_user = key.get("user_limits") or {}
        if user and (per_user.get("rpm") or per_user.get("tpm") or per_user.get("rpd")):
            subjects.append(
                Subject.of(f"{key['_id']}/u/{user}", f"user '{user}'", per_user, "user_")
            )
        return subjects

    async def _windows(
        self, grant: Grant, s: Subject, tokens: int, key_level: bool, now: datetime
    ) -> None:
        if s.rpm or s.tpm:
            start, end, start_id = self._minute(now)
            wait = seconds_until(now, end) or 1
            if s.tpm and tokens > s.tpm:  # can never fit, whatever the window holds
                raise self._tokens_refusal(s, tokens, wait)
            # Both fields always exist on a minute document, so a limit added mid-window
            # compares against a number, never a missing field.
            limits = {"r": s.rpm or 0, "t": s.tpm or 0}
            need = {"r": 1 if s.rpm else 0, "t": tokens if s.tpm else 0}
            doc_id = f"{s.id}|m|{start_id}"
            lease = await self._take(doc_id, end, limits, need)
            if lease is None:  # the server refused atomically; read why, only now
                current = await self._store.get(WINDOWS, doc_id) or {}
                if s.rpm and current.get("r", 0) + 1 > s.rpm:
                    raise refusal(
                        f"{s.code_prefix}rate_limit_exceeded",
                        f"Rate limit reached for {s.label}: {s.rpm} requests per minute.",
                        wait,
                    )
                raise self._tokens_refusal(s, tokens, wait)
            if s.rpm:
                grant.held.append(Held(WINDOWS, doc_id, "r", 1))
            if s.tpm:
                held = Held(WINDOWS, doc_id, "t", tokens)
                grant.held.append(held)
                grant.tokens_reserved.append(held)
            if key_level:
                reset = openai_duration(wait)
                if s.rpm:
                    grant.headers.update(
                        {
                            "x-ratelimit-limit-requests": str(s.rpm),
                            "x-ratelimit-remaining-requests": str(lease.remaining("r", s.rpm)),
                            "x-ratelimit-reset-requests": reset,
                        }
                    )
                if s.tpm:
                    grant.headers.update(
                        {
                            "x-ratelimit-limit-tokens": str(s.tpm),
                            "x-ratelimit-remaining-tokens": str(lease.remaining("t", s.tpm)),
                            "x-ratelimit-reset-tokens": reset,
                        }
                    )
        if s.rpd:
            start, end = day_window(now)
            doc_id = f"{s.id}|d|{start.date().isoformat()}"
            lease = await self._take(doc_id, end, {"r": s.rpd}, {"r": 1})
            if lease is None:
                raise refusal(
                    f"{s.code_prefix}rate_limit_exceeded",
                    f"Rate limit reached for {s.label}: {s.rpd} requests per day.",
                    seconds_until(now, end) or 1,
                )
            grant.held.append(Held(WINDOWS, doc_id, "r", 1))
            if key_level and not s.rpm:
                grant.headers.update(
                    {
                        "x-ratelimit-limit-requests": str(s.rpd),
                        "x-ratelimit-remaining-requests": str(lease.remaining("r", s.rpd)),
                        "x-ratelimit-reset-requests": openai_duration((end - now).total_seconds()),
                    }
                )

    def _minute(self, now: datetime) -> tuple[datetime, datetime, str]:
        """The minute window holding ``now``: start, end, and the start as it appears in
        document ids; worked out once a minute rather than per request."""
        cached = self._minute_cache
        if cached is None or not cached[0] <= now < cached[1]:
            start, end = minute_window(now)
            cached = self._minute_cache = (start, end, str(int(start.timestamp())))
        return cached

    async def _take(
        self, doc_id: str, end: datetime, limits: dict[str, int], need: dict[str, int]
    ) -> Lease | None:
        """Take ``need`` from this instance's lease on a window document, leasing more
        from the store when it runs short (one lease operation per document at a time;
        concurrent requests wait for it). None: the window is full."""
        while True:
            lease = self._leases.get(doc_id)
            if lease is not None and lease.limits != limits:
                # The limit changed: what is left of the lease stays counted (never more
                # than the old limit allowed) and this instance leases under the new one.
                lease.have.clear()
                lease.limits = limits
            if lease is not None and lease.take(need):
                return lease
            lease_more = functools.partial(self._lease, doc_id, end, limits, need)
            ran, leased = await _in_turn(self._leasing, doc_id, lease_more)
            if ran and leased is None:
                return None

    async def _lease(
        self, doc_id: str, end: datetime, limits: dict[str, int], need: dict[str, int]
    ) -> Lease | None:
        """Count more of a window for this instance: a lease's worth if it fits, else
        just ``need``. None if not even that fits."""
        lease = self._leases.get(doc_id)
        have = lease.have if lease is not None else {}
        short = {f: n for f, n in need.items() if n and have.get(f, 0) < n}
        # A fiftieth of the limit, for at most LEASE_MAX requests like this one; never
        # less than this request needs.
        ask = {f: max(n, min(limits[f] // LEASE_SHARE, n * LEASE_MAX)) for f, n in short.items()}
        doc = await self._lease_op(doc_id, end, limits, ask)
        if doc is None and ask != short:
            ask = dict(short)  # a whole lease no longer fits: one request at a time
            doc = await self._lease_op(doc_id, end, limits, ask)
        if doc is None:
            return None
        if lease is None:
            self._drop_ended_leases()
            lease = self._leases[doc_id] = Lease(end, limits)
        for name, amount in ask.items():
            lease.have[name] = lease.have.get(name, 0) + amount
        lease.counted = {f: int(doc.get(f) or 0) for f in limits}
        return lease

    async def _lease_op(
        self, doc_id: str, end: datetime, limits: dict[str, int], ask: dict[str, int]
    ) -> Doc | None:
        inc = {f: ask.get(f, 0) for f in limits}
        where: dict[str, Any] = {f: {"$lte": limits[f] - n} for f, n in ask.items() if n}
        return await self._store.increment(
            WINDOWS,
            doc_id,
            inc,
            set_on_insert={"expires_at": end},
            where=where,
            returning=tuple(limits),
        )

    def _drop_ended_leases(self) -> None:
        """Forget leases of ended windows (what is left of them can no longer be used);
        at most once a minute."""
        if self._clock.monotonic() - self._leases_pruned < 60:
            return
        self._leases_pruned = self._clock.monotonic()
        now = self._clock.now()
        self._leases = {k: v for k, v in self._leases.items() if v.end > now}

    @staticmethod
    def _tokens_refusal(s: Subject, tokens: int, wait: int) -> ApiError:
        return refusal(
            f"{s.code_prefix}tokens_rate_limit_exceeded",
            f"Token rate limit reached for {s.label}: {s.tpm} tokens per minute "
            f"(this request needs about {tokens}).",
            wait,
        )

    async def hold(self, grant: Grant, doc_id: str, limit: int, label: str) -> None:
        """Hold one of ``limit`` concurrent slots (e.g. realtime sessions) until settled."""
        try:
            await self._parallel(grant, doc_id, limit, label)
        except ApiError:
            await self._undo(grant.parallel)
            raise

    async def _parallel(self, grant: Grant, doc_id: str, limit: int, label: str) -> None:
        if not await self._slot(doc_id, limit):
            raise refusal(
                "parallel_limit_exceeded",
                f"Too many requests in flight for {label}: the limit is {limit}.",
                1,
            )
        grant.parallel.append(Held(PARALLEL, doc_id, f"by.{self.instance}", 1))

    async def _slot(self, doc_id: str, limit: int) -> bool:
        """Take one of ``limit`` parallel slots: one this instance holds idle, else more
        from the store (one such operation per document at a time)."""
        while True:
            slots = self._slots.get(doc_id)
            if slots is None:
                slots = self._slots[doc_id] = Slots(limit)
            slots.limit = limit
            if slots.in_use < slots.held:
                slots.in_use += 1
                slots.used = True
                return True
            grow = functools.partial(self._grow, doc_id, slots)
            ran, gained = await _in_turn(self._growing, doc_id, grow)
            if ran and not gained:
                return False

    async def _grow(self, doc_id: str, slots: Slots) -> int:
        """Hold more slots: a lease's worth, less any that would pass the limit. Returns
        how many were gained."""
        path = f"by.{self.instance}"
        ask = max(1, min(LEASE_MAX, slots.limit // LEASE_SHARE))
        doc = await self._store.increment(PARALLEL, doc_id, {path: ask})
        assert doc is not None
        running: int = sum(n for inst, n in (doc.get("by") or {}).items() if inst in self._live)
        over = max(0, min(running - slots.limit, ask))
        slots.held += ask - over
        if over:  # past the limit: give back what does not fit, at once
            await self._store.increment(
                PARALLEL, doc_id, {path: -over}, upsert=False, returning=False
            )
        return ask - over

    def _free_slot(self, doc_id: str) -> None:
        """A request holding a slot ended: the slot is idle, for this instance to reuse
        until the next settlement batch returns what is idle to the store."""
        slots = self._slots.get(doc_id)
        if slots is not None and slots.in_use > 0:
            slots.in_use -= 1
            self._idle.add(doc_id)
            self._arm()

    def _sweep_slots(self) -> None:
        """Give back every slot of a key or group unused for a whole heartbeat, so idle
        keys hold nothing other instances could use."""
        for doc_id, slots in list(self._slots.items()):
            if not slots.used and slots.in_use == 0 and doc_id not in self._growing:
                if slots.held:
                    self._defer(PARALLEL, doc_id, f"by.{self.instance}", -slots.held)
                del self._slots[doc_id]
            slots.used = False

    def _idle_slots(self) -> dict[str, dict[str, float]]:
        """Slots to return now: all idle ones below 100, else those past a lease's worth."""
        path = f"by.{self.instance}"
        returned: dict[str, dict[str, float]] = {}
        for doc_id in self._idle:
            slots = self._slots.get(doc_id)
            if slots is None:
                continue
            keep = max(1, min(LEASE_MAX, slots.limit // LEASE_SHARE)) - 1
            extra = slots.held - slots.in_use - keep
            if extra > 0:
                slots.held -= extra
                returned[doc_id] = {path: -extra}
            if slots.held == 0 and doc_id not in self._growing:
                del self._slots[doc_id]  # nothing held: forget it (keys come and go)
        self._idle.clear()
        return returned

    async def _check_budgets(
        self, grant: Grant, key: Doc, group: Doc | None, user: str | None, now: datetime
    ) -> None:
        if key.get("max_budget") is not None:
            spent = await self._spent_of("keys", key["_id"])
            self._budget_gate(key, spent, "this key", "budget_exceeded", now)
        grant.budgets.append(
            Budget(
                "keys",
                key["_id"],
                "key",
                key["name"],
                key.get("budget_duration"),
                key["created_at"],
                key.get("max_budget"),
            )
        )
        if group is not None:
            label = f"group '{group['_id']}'"
            if group.get("max_budget") is not None:
                spent = await self._spent_of("groups", group["_id"])
                self._budget_gate(group, spent, label, "budget_exceeded", now)
            grant.budgets.append(
                Budget(
                    "groups",
                    group["_id"],
                    "group",
                    group["_id"],
                    group.get("budget_duration"),
                    group["created_at"],
                    group.get("max_budget"),
                )
            )
        per_user = key.get("user_limits") or {}
        if user and per_user.get("max_budget") is not None:
            duration = per_user.get("budget_duration") or key.get("budget_duration")
            doc_id = f"{key['_id']}|{user}"
            self._budget_gate(
                {
                    "created_at": key["created_at"],
                    "max_budget": per_user["max_budget"],
                    "budget_duration": duration,
                },
                await self._spent_of(USER_BUDGETS, doc_id),
                f"user '{user}'",
                "user_budget_exceeded",
                now,
            )
            grant.budgets.append(
                Budget(
                    USER_BUDGETS,
                    doc_id,
                    "user",
                    user,
                    duration,
                    key["created_at"],
                    float(per_user["max_budget"]),
                    upsert=True,
                )
            )

    async def _spent_of(self, collection: str, id: str) -> Doc:
        """An account's current spend (its SPENT fields), cached for ``spend_ttl``."""
        now = self._clock.monotonic()
        hit = self._spent.get((collection, id))
        if hit is not None and hit[0] > now:
            return hit[1]
        doc = await self._store.get(collection, id, SPENT) or {}
        if self.spend_ttl > 0:
            if len(self._spent) >= _SPENT_CACHE_MAX:
                self._spent = {k: v for k, v in self._spent.items() if v[0] > now}
            self._spent[(collection, id)] = (now + self.spend_ttl, doc)
        return doc

    def _note_spent(self, collection: str, id: str, spend: float, start: datetime) -> None:
        """This instance's own charge, as written: a cached spend reflects it."""
        hit = self._spent.get((collection, id))
        if hit is not None:
            hit[1].update(spend=spend, period_start=start)

    def forget_spent(self, collection: str, id: str) -> None:
        self._spent.pop((collection, id), None)

    def _budget_gate(self, account: Doc, spent: Doc, label: str, code: str, now: datetime) -> None:
        """429 if ``account``'s budget is used up by ``spent`` in the current period."""
        start, end = budget_period(account.get("budget_duration"), account["created_at"], now)
        spend = (spent.get("spend") or 0.0) if spent.get("period_start") == start else 0.0
        limit = float(account["max_budget"])
        if spend >= limit:
            wait = seconds_until(now, end)
            raise refusal(
                code,
                f"Budget exhausted for {label}: spent ${spend:.4f} of ${limit:.4f}"
                + (f"; it resets at {end.isoformat()}." if end else "."),
                wait if wait is not None else 86_400 * 365,
            )

    # -- settlement -----------------------------------------------------------------------

    def settle(self, grant: Grant, tokens_used: int | None, cost: float | None) -> None:
        """End a request: free its parallel slots, reconcile tpm, add its cost to every
        budget; written behind (see the module docstring)."""
        if grant.settled:
            return
        grant.settled = True
        for held in grant.parallel:
            self._free_slot(held.id)
        grant.parallel.clear()
        if tokens_used is not None:
            for held in grant.tokens_reserved:
                if tokens_used != held.amount:
                    self._defer(held.collection, held.id, held.field, tokens_used - held.amount)
        if cost:
            for budget in grant.budgets:
                self._charges[budget] = self._charges.get(budget, 0.0) + cost
            self._arm()

    async def release(self, grant: Grant) -> None:
        """A request that will not be charged (failed before any upstream work)."""
        if not grant.settled:
            grant.settled = True
            await self._undo(grant.held + grant.parallel)

    def _defer(self, collection: str, id: str, field: str, amount: float) -> None:
        changes = self._deferred.setdefault(collection, {}).setdefault(id, {})
        changes[field] = changes.get(field, 0) + amount
        self._arm()

    def _arm(self) -> None:
        if self._settle_timer is None and self._settling is None:
            loop = asyncio.get_running_loop()
            self._settle_timer = loop.call_later(SETTLE_DELAY, self._start_settling)

    def _start_settling(self) -> None:
        self._settle_timer = None
        self._settling = asyncio.get_running_loop().create_task(self._settle_batch())

    async def _settle_batch(self) -> None:
        try:
            await self._write_behind()
        except Exception:
            log.exception("writing settled limits failed")
        finally:
            self._settling = None
            if self._deferred or self._charges or self._idle:
                self._arm()

    async def close(self) -> None:
        """Shutting down (no request in flight): give back every slot and the unused part
        of every current lease, so other instances can use them at once, then flush."""
        now = self._clock.now()
        for doc_id, lease in self._leases.items():
            if lease.end > now:
                for name, amount in lease.have.items():
                    if amount:
                        self._defer(WINDOWS, doc_id, name, -amount)
                lease.have.clear()
        for doc_id, slots in self._slots.items():
            if slots.held > slots.in_use:
                self._defer(PARALLEL, doc_id, f"by.{self.instance}", -(slots.held - slots.in_use))
                slots.held = slots.in_use
        await self.flush()

    async def flush(self) -> None:
        """Write everything settled so far now (shutdown, and tests that read the store)."""
        while self._settling is not None:  # a batch is going out: let it land first
            await asyncio.wait([self._settling])
        if self._settle_timer is not None:
            self._settle_timer.cancel()
            self._settle_timer = None
        await self._write_behind()

    async def _write_behind(self) -> None:
        deferred, self._deferred = self._deferred, {}
        for doc_id, change in self._idle_slots().items():
            counters = deferred.setdefault(PARALLEL, {}).setdefault(doc_id, {})
            for name, amount in change.items():
                counters[name] = counters.get(name, 0) + amount
        charges, self._charges = self._charges, {}
        for collection, changes in deferred.items():
            live = {id: inc for id, inc in changes.items() if any(inc.values())}
            try:
                await self._store.increment_many(collection, live)
            except Exception:
                log.exception("settling %d %s counters failed; will retry", len(live), collection)
                for id, inc in live.items():
                    for name, amount in inc.items():
                        self._defer(collection, id, name, amount)
        made: list[Charge] = []
        for budget, cost in charges.items():
            try:
                charge = await self.add_spend(budget, cost)
            except Exception:
                log.exception("charging %s %s failed; will retry", budget.kind, budget.name)
                self._charges[budget] = self._charges.get(budget, 0.0) + cost
                self._arm()
                continue
            if charge is not None:
                made.append(charge)
        if made and self.on_charges is not None:
            await self.on_charges(made)

    async def add_spend(self, budget: Budget, cost: float) -> Charge | None:
        """Add cost to the current period's spend, starting a new period if one began.
        Returns None if the account no longer exists."""
        start, _ = budget_period(budget.duration, budget.anchor, self._clock.now())
        store, coll, doc_id = self._store, budget.collection, budget.id
        for _ in range(3):
            doc = await store.increment(
                coll,
                doc_id,
                {"spend": cost, "total_spend": cost},
                where={"period_start": start},
                upsert=False,
                returning=SPEND,
            )
            if doc is None:  # a new period began: reset it, unless another instance just did
                doc = await store.increment(
                    coll,
                    doc_id,
                    {"total_spend": cost},
                    set={"spend": cost, "period_start": start},
                    where={"period_start": {"$ne": start}},
                    upsert=False,
                    returning=SPEND,
                )
            if doc is None and await store.get(coll, doc_id, SPEND) is None:
                if not budget.upsert:
                    return None  # deleted meanwhile
                doc = await store.increment(
                    coll,
                    doc_id,
                    {"spend": cost, "total_spend": cost},
                    set_on_insert={"period_start": start, "created_at": budget.anchor},
                    returning=SPEND,
                )
            if doc is not None:
                after = float(doc["spend"])
                self._note_spent(coll, doc_id, after, start)
                return Charge(budget, after - cost, after, start)
        return None

    async def adjust_spend(
        self, collection: str, doc: Doc, *, spend: float | None, add: float | None
    ) -> Doc | None:
        """Admin: set the current period's spend (0 resets it) or add to it."""
        try:
            if spend is not None:
                start, _ = budget_period(
                    doc.get("budget_duration"), doc["created_at"], self._clock.now()
                )
                return await self._store.update(
                    collection, doc["_id"], {"spend": spend, "period_start": start}
                )
            assert add is not None
            budget = Budget(
                collection, doc["_id"], "", "", doc.get("budget_duration"), doc["created_at"], None
            )
            await self.add_spend(budget, add)
            return await self._store.get(collection, doc["_id"])
        finally:
            self.forget_spent(collection, doc["_id"])  # the next check reads the new spend

    async def _undo(self, held: list[Held]) -> None:
        """Give back what a refused or failed request took: window counts to this
        instance's lease when it still holds one (no round trip), the rest to the store."""
        for h in reversed(held):
            if h.collection == PARALLEL:
                self._free_slot(h.id)
                continue
            lease = self._leases.get(h.id) if h.collection == WINDOWS else None
            if lease is not None:
                lease.have[h.field] = lease.have.get(h.field, 0) + int(h.amount)
                continue
            try:
                await self._store.increment(
                    h.collection, h.id, {h.field: -h.amount}, upsert=False, returning=False
                )
            except Exception:
                log.exception("could not release %s %s", h.collection, h.id)
        held.clear()
