"""Rate limits, parallel limits and budgets that hold under concurrency and across instances.

Every decision is one atomic store operation whose answer is the decision:

* rpm / rpd / tpm: a conditional ``$inc`` with upsert on a window document
  (``limit_windows``) whose filter carries the limit (``r < rpm``, ``t <= tpm - tokens``):
  the server applies it atomically or not at all, so with rpm=50 exactly 50 pass however
  many instances race, and a refused request counts nothing. (The decision never relies on
  the returned document: jongodb, measured, sometimes returns a post-image read after a
  concurrent update.) Increments already made for other subjects of a refused request are
  undone. tpm reserves an estimate (prompt + max_tokens) and is reconciled afterwards.
* max_parallel: one document per key (or group) with a counter per gateway instance; the
  total counts only instances whose heartbeat is fresh, so a crashed instance's slots free
  themselves.
* budgets: the current period's spend lives on the key / group document (and per end user
  in ``user_budgets``); a request starts only if the spend is under budget, and its cost
  is added atomically when it ends, resetting at the period boundary. The spend a check
  reads is cached per instance for ``spend_ttl`` seconds: this instance's own charges
  update the cache at once, other instances' show within the TTL. (A check before the
  request and a charge after it are never exact across concurrent requests anyway; the
  TTL bounds how much later another instance's spend is seen, and saves a store round
  trip per request.)

A key with no limits costs no store operation here.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .clock import Clock
from .errors import ApiError
from .periods import budget_period, day_window, minute_window, openai_duration, seconds_until
from .store import Doc, Store

log = logging.getLogger("conduit.limits")
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

    # -- instances ------------------------------------------------------------------------

    async def heartbeat(self) -> None:
        now = self._clock.now()
        if await self._store.update(INSTANCES, self.instance, {"seen": now}) is None:
            await self._store.insert(INSTANCES, {"_id": self.instance, "seen": now})
        live = await self._store.find(
            INSTANCES, {"seen": {"$gte": now - INSTANCE_TTL}}, limit=10_000
        )
        self._live = {d["_id"] for d in live} | {self.instance}

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
            start, end = minute_window(now)
            wait = seconds_until(now, end) or 1
            if s.tpm and tokens > s.tpm:  # can never fit, whatever the window holds
                raise self._tokens_refusal(s, tokens, wait)
            # Both fields always exist on a minute document, so a limit added mid-window
            # compares against a number, never a missing field.
            inc: dict[str, float] = {"r": 1 if s.rpm else 0, "t": tokens if s.tpm else 0}
            cond: dict[str, Any] = {}
            if s.rpm:
                cond["r"] = {"$lt": s.rpm}
            if s.tpm:
                cond["t"] = {"$lte": s.tpm - tokens}
            doc_id = f"{s.id}|m|{int(start.timestamp())}"
            doc = await self._store.increment(
                WINDOWS, doc_id, inc, set_on_insert={"expires_at": end}, where=cond
            )
            if doc is None:  # the server refused atomically; read why, only now
                current = await self._store.get(WINDOWS, doc_id) or {}
                if s.rpm and current.get("r", 0) >= s.rpm:
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
                reset = openai_duration((end - now).total_seconds())
                if s.rpm:
                    grant.headers.update(
                        {
                            "x-ratelimit-limit-requests": str(s.rpm),
                            "x-ratelimit-remaining-requests": str(max(0, s.rpm - int(doc["r"]))),
                            "x-ratelimit-reset-requests": reset,
                        }
                    )
                if s.tpm:
                    grant.headers.update(
                        {
                            "x-ratelimit-limit-tokens": str(s.tpm),
                            "x-ratelimit-remaining-tokens": str(max(0, s.tpm - int(doc["t"]))),
                            "x-ratelimit-reset-tokens": reset,
                        }
                    )
        if s.rpd:
            start, end = day_window(now)
            doc_id = f"{s.id}|d|{start.date().isoformat()}"
            doc = await self._store.increment(
                WINDOWS,
                doc_id,
                {"r": 1},
                set_on_insert={"expires_at": end},
                where={"r": {"$lt": s.rpd}},
            )
            if doc is None:
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
                        "x-ratelimit-remaining-requests": str(max(0, s.rpd - int(doc["r"]))),
                        "x-ratelimit-reset-requests": openai_duration((end - now).total_seconds()),
                    }
                )

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
        path = f"by.{self.instance}"
        doc = await self._store.increment(PARALLEL, doc_id, {path: 1})
        assert doc is not None
        held = Held(PARALLEL, doc_id, path, 1)
        grant.parallel.append(held)
        running = sum(n for inst, n in (doc.get("by") or {}).items() if inst in self._live)
        if running > limit:
            raise refusal(
                "parallel_limit_exceeded",
                f"Too many requests in flight for {label}: the limit is {limit}.",
                1,
            )

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
        """This instance's own charge: a cached spend reflects it at once."""
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

    async def settle(
        self, grant: Grant, tokens_used: int | None, cost: float | None
    ) -> list[Charge]:
        """End a request: free parallel slots, reconcile tpm, add its cost to every budget."""
        if grant.settled:
            return []
        grant.settled = True
        await self._undo(grant.parallel)
        if tokens_used is not None:
            for held in grant.tokens_reserved:
                delta = tokens_used - held.amount
                if delta:
                    await self._store.increment(
                        held.collection, held.id, {held.field: delta}, upsert=False, returning=False
                    )
        charges: list[Charge] = []
        if cost:
            for budget in grant.budgets:
                charge = await self.add_spend(budget, cost)
                if charge is not None:
                    charges.append(charge)
        return charges

    async def release(self, grant: Grant) -> None:
        """A request that will not be charged (failed before any upstream work)."""
        if not grant.settled:
            grant.settled = True
            await self._undo(grant.held + grant.parallel)

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
        for h in reversed(held):
            try:
                await self._store.increment(
                    h.collection, h.id, {h.field: -h.amount}, upsert=False, returning=False
                )
            except Exception:
                log.exception("could not release %s %s", h.collection, h.id)
        held.clear()
