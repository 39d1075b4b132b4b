"""Rate limits and parallel limits that hold under concurrency and across instances, and
the settlement of every admitted request.

Every decision is an atomic store operation whose answer is the decision:

* rpm / rpd / tpm: a conditional ``$inc`` with upsert on a window document
  (``limit_windows``) whose filter carries the limit (``r <= rpm - n``, ``t <= tpm - n``):
  the server applies it atomically or not at all, so the window never counts more than its
  limit however many instances race, and a refused request counts nothing. (The decision
  never relies on the returned document: jongodb, measured, sometimes returns a post-image
  read after a concurrent update.) An instance takes capacity in leases (holdings.py): with
  a limit of 100 or more a fiftieth of it (at most 64 requests) per operation, so an
  instance leaves at most 2% of a window's limit unused at its end; below 100 every
  request is its own operation. tpm reserves an estimate (prompt + max_tokens) and is
  reconciled afterwards. What a refused request took for other subjects is given back.
* max_parallel: one document per key (or group) with a counter per gateway instance of
  the slots it holds; the total counts only instances whose heartbeat is fresh, so a
  crashed instance's slots free themselves. An instance takes slots as it needs them,
  gives back any past the limit at once, reuses the slots its finished requests free, and
  returns idle ones with the next settlement batch (keeping fewer than a lease's worth,
  and none once the key or group has gone a heartbeat without a request).
* budgets: see budgets.py.

Settling a request (freeing its parallel slot, reconciling its tpm reservation, charging
its cost) needs no answer, so it is written behind: changes are summed per document for
SETTLE_DELAY and go out together, one bulk write per collection and one charge per budget
account, whatever the request rate. Each batch counts once: a batch the store failed
on, perhaps after applying it (a timeout), is sent again as it was under its number, which
the documents that took it remember (Store.increment_many's ``once``), and newer changes
to the same collection or account wait until it is through.

On MongoDB a store operation costs more CPU than the whole memory-store request path
(bench/store_ops.py counts them per request), so the hot path avoids per-request round
trips wherever the guarantees above allow.

A key with no limits costs no store operation here.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from conduit_tornado.core import meters
from conduit_tornado.core.clock import Clock
from conduit_tornado.core.errors import ApiError, refusal
from conduit_tornado.store import Doc, DuplicateError, Store, StoreUnavailable, log_failure
from conduit_tornado.store.once_writes import OnceWrites

from .budgets import Account, Budget, Budgets, Charge
from .holdings import PARALLEL, WINDOWS, Holdings
from .periods import day_window, minute_window, openai_duration, seconds_until
from .pruning import pruned_while_away

log = logging.getLogger("conduit.limits")
INSTANCES = "instances"
HEARTBEAT_SECONDS = 5.0
INSTANCE_TTL = timedelta(seconds=20)
SETTLE_DELAY = 0.01  # seconds settlements gather before they are written together
_PLANS_MAX = 10_000


@dataclass(slots=True)
class Held:
    """A reservation to undo or reconcile: ``amount`` added to ``field`` of a document."""

    collection: str
    id: str
    field: str
    amount: float


@dataclass(slots=True)
class Grant:
    """What an admitted request holds until it ends."""

    held: list[Held] = field(default_factory=list)
    tokens_reserved: list[Held] = field(default_factory=list)
    parallel: list[Held] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    budgets: list[Budget] = field(default_factory=list)
    settled: bool = False


@dataclass(slots=True, eq=False)
class Subject:
    """Something limits apply to: a key, a key's use of one model, a group, an end user."""

    id: str
    label: str  # for messages: "key", "group 'research'", "user 'bob'"
    code_prefix: str  # "" or "user_"
    rpm: int | None = None
    rpd: int | None = None
    tpm: int | None = None
    # Worked out with the subject rather than per request. Both fields always exist on a
    # minute document, so a limit added mid-window compares against a number.
    minute_limits: dict[str, int] = field(init=False)
    rpm_text: str = field(init=False)
    tpm_text: str = field(init=False)

    def __post_init__(self) -> None:
        self.minute_limits = {"r": self.rpm or 0, "t": self.tpm or 0}
        self.rpm_text, self.tpm_text = str(self.rpm), str(self.tpm)

    @classmethod
    def of(cls, id: str, label: str, limits: Doc, code_prefix: str = "") -> Subject:
        """A subject whose rpm / rpd / tpm come from a key, group or limits document."""
        return cls(id, label, code_prefix, limits.get("rpm"), limits.get("rpd"), limits.get("tpm"))


@dataclass(slots=True)
class _Plan:
    """What admitting a request of one key, model and end user involves, worked out once
    per key (and group) document: the documents are replaced, never changed, when the
    key or group is, so holding the same ones means the plan still stands."""

    key: Doc
    group: Doc | None
    subjects: list[Subject]
    accounts: list[Account]
    parallel: list[tuple[str, int, str]]  # (slot document, limit, label)


def with_limit_headers(
    error: ApiError, unit: str, limit: int, left: int | None, wait: float
) -> ApiError:
    """A refusal with OpenAI's x-ratelimit-* headers for the limit that refused it (the
    key's, its group's, an end user's ...): what the openai SDK's users read to back off."""
    error.headers[f"x-ratelimit-limit-{unit}"] = str(limit)
    if left is not None:
        error.headers[f"x-ratelimit-remaining-{unit}"] = str(left)
    error.headers[f"x-ratelimit-reset-{unit}"] = openai_duration(wait)
    return error


class Limiter:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        instance_id: str | None = None,
        *,
        spend_ttl: float = 1.0,
        on_charges: Callable[[list[Charge]], Awaitable[None]] | None = None,
        instance_ttl: float = float("inf"),
    ) -> None:
        self._store = store
        self._clock = clock
        self.instance = instance_id or "inst_" + secrets.token_hex(6)
        self._groups: dict[str, tuple[float, Doc | None]] = {}
        self.group_ttl = 5.0
        self.budgets = Budgets(store, clock, spend_ttl)
        self._holdings = Holdings(store, clock, self.instance, self._look_at_instances)
        self._minute_cache: tuple[datetime, datetime, str] | None = None
        # Written behind (see the module docstring): {collection: {id: {field: amount}}}
        # and {(collection, id) of a budget account: (its budget, cost)}, with the timer
        # or task that writes them.
        self._deferred: dict[str, dict[str, dict[str, float]]] = {}
        self._charges: dict[tuple[str, str], tuple[Budget, float]] = {}
        # Each batch counts once (store/once_writes.py): by collection, and by budget account.
        # The two touch different collections, so they share this instance's name.
        self._counters: OnceWrites[str, dict[str, dict[str, float]], None] = OnceWrites(
            self.instance,
            lambda collection, changes, once: store.increment_many(collection, changes, once=once),
            log,
            lambda collection, changes: f"settling {len(changes)} {collection} counters",
        )
        self._spends: OnceWrites[tuple[str, str], tuple[Budget, float], Charge | None] = OnceWrites(
            self.instance,
            lambda _, charge, once: self.budgets.add_spend(*charge, once=once),
            log,
            lambda _, charge: f"charging {charge[0].kind} {charge[0].name}",
        )
        # Charges taken from _charges by a batch and not yet answered: with _charges and
        # the unsure writes, all this instance charged that the store has not confirmed,
        # which budget checks count (_owed). Added to and taken from, never set: batches
        # may overlap (flush()).
        self._sending: dict[tuple[str, str], float] = {}
        self.budgets.owed = self._owed
        self._plans: dict[tuple[str, str, str | None], _Plan] = {}
        self._settle_timer: asyncio.TimerHandle | None = None
        self._settling: asyncio.Task[None] | None = None
        #: Told of every charge written (budget alerts).
        self._on_charges = on_charges
        # Batches go out only within instance_ttl / 2 of a heartbeat that reached the
        # store: past instance_ttl other instances may prune what guards them (pruning.py).
        self.instance_ttl = instance_ttl
        self._registered = False
        self._send_until = float("inf")
        self._counters.may_send = self._spends.may_send = self._may_send

    # -- instances ------------------------------------------------------------------------

    async def heartbeat(self) -> None:
        now = self._clock.now()
        # Not while a live instance is pruning this one (pruning.py): it is let back in
        # once the pruning is done and its document gone.
        beat = {"pruning": {"$ne": True}}
        if await self._store.update(INSTANCES, self.instance, {"seen": now}, where=beat) is None:
            if self._registered:
                pruned_while_away(self._counters, self._spends, self._holdings, log)
                self._registered = False
            try:
                await self._store.insert(INSTANCES, {"_id": self.instance, "seen": now})
            except DuplicateError:  # still being pruned: batches wait until it is done
                log.warning("this instance is being pruned by another; it rejoins after")
                return
        self._registered = True
        self._send_until = self._clock.monotonic() + self.instance_ttl / 2
        live = await self._store.find(
            INSTANCES, {"seen": {"$gte": now - INSTANCE_TTL}}, limit=10_000
        )
        self._holdings.live = {d["_id"] for d in live} | {self.instance}
        for doc_id, count in self._holdings.unused_slots().items():
            self._defer(PARALLEL, doc_id, self._holdings.slot_path, -count)

    async def _look_at_instances(self) -> None:
        """Refresh which instances are live, between heartbeats (see Holdings._grow)."""
        now = self._clock.now()
        live = await self._store.find(
            INSTANCES, {"seen": {"$gte": now - INSTANCE_TTL}}, limit=10_000
        )
        self._holdings.live = {d["_id"] for d in live} | {self.instance}

    async def run_heartbeat(self) -> None:
        while True:
            try:
                await self.heartbeat()
            except Exception as exc:
                log_failure(log, exc, "instance heartbeat failed")
            await asyncio.sleep(HEARTBEAT_SECONDS)

    # -- groups ---------------------------------------------------------------------------

    async def group(self, name: str) -> Doc | None:
        now = self._clock.monotonic()
        hit = self._groups.get(name)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            doc = await self._store.get("groups", name)
        except StoreUnavailable:
            if hit is None:
                raise
            return hit[1]  # stale if the store is down, as keys are (keys.py)
        self._groups[name] = (now + self.group_ttl, doc)
        return doc

    def forget_group(self, name: str | None = None) -> None:
        """Drop a group's cached document (None: every group's)."""
        if name is None:
            self._groups.clear()
        else:
            self._groups.pop(name, None)

    def _may_send(self) -> bool:
        return self._clock.monotonic() <= self._send_until

    # -- admission ------------------------------------------------------------------------

    async def admit(self, key: Doc, model: str, user: str | None, tokens: int) -> Grant:
        """Reserve everything this request needs, or raise (429, or the store's outage)
        having reserved nothing."""
        grant = Grant()
        group = await self.group(key["group"]) if key.get("group") else None
        plan = self._plan(key, model, user, group)
        try:
            now = self._clock.now()  # one instant for every check of this request
            grant.budgets = [a.budget for a in plan.accounts]
            await self.budgets.check(plan.accounts, now)
            for subject in plan.subjects:
                if subject.rpm or subject.tpm:
                    await self._per_minute(grant, subject, tokens, subject.id == key["_id"], now)
                if subject.rpd:
                    await self._per_day(grant, subject, subject.id == key["_id"], now)
            for doc_id, limit, label in plan.parallel:
                await self._parallel(grant, doc_id, limit, label)
        except Exception as exc:  # a refusal, or the store failing part way: give back
            await self._undo(grant.held + grant.parallel)
            if isinstance(exc, ApiError) and exc.status == 429:
                meters.refused(exc.code)
            raise
        return grant

    def _plan(self, key: Doc, model: str, user: str | None, group: Doc | None) -> _Plan:
        per_user = key.get("user_limits") or {}
        user_part = user if user and per_user else None  # end users matter only then
        cache_key = (key["_id"], model, user_part)
        plan = self._plans.get(cache_key)
        if plan is not None and plan.key is key and plan.group is group:
            return plan
        parallel = []
        if key.get("max_parallel"):
            parallel.append((key["_id"], int(key["max_parallel"]), "this key"))
        if group is not None and group.get("max_parallel"):
            label = f"group '{group['_id']}'"
            parallel.append((f"group/{group['_id']}", int(group["max_parallel"]), label))
        plan = _Plan(
            key,
            group,
            self._subjects(key, model, user, group),
            self.budgets.accounts(key, group, user),
            parallel,
        )
        if len(self._plans) >= _PLANS_MAX:
            self._plans.clear()
        self._plans[cache_key] = plan
        return plan

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

    async def _per_minute(
        self, grant: Grant, s: Subject, tokens: int, key_level: bool, now: datetime
    ) -> None:
        _, end, start_id = self._minute(now)
        wait = seconds_until(now, end) or 1
        if s.tpm and tokens > s.tpm:  # can never fit, whatever the window holds
            raise self._tokens_refusal(s, tokens, wait)
        need = {"r": 1 if s.rpm else 0, "t": tokens if s.tpm else 0}
        doc_id = f"{s.id}|m|{start_id}"
        holdings = self._holdings
        lease = holdings.take_held(doc_id, s.minute_limits, need)
        if lease is None:
            lease = await holdings.take(doc_id, end, s.minute_limits, need)
        if lease is None:  # the server refused atomically; read why, only now
            current = await self._store.get(WINDOWS, doc_id) or {}
            if s.rpm and current.get("r", 0) + 1 > s.rpm:
                raise with_limit_headers(
                    refusal(
                        f"{s.code_prefix}rate_limit_exceeded",
                        f"Rate limit reached for {s.label}: {s.rpm} requests per minute.",
                        wait,
                    ),
                    "requests",
                    s.rpm,
                    0,
                    wait,
                )
            left = max(0, int(s.tpm or 0) - int(current.get("t", 0)))
            raise self._tokens_refusal(s, tokens, wait, left)
        if s.rpm:
            grant.held.append(Held(WINDOWS, doc_id, "r", 1))
        if s.tpm:
            held = Held(WINDOWS, doc_id, "t", tokens)
            grant.held.append(held)
            grant.tokens_reserved.append(held)
        if key_level:
            headers = grant.headers
            reset = openai_duration(wait)
            if s.rpm:
                headers["x-ratelimit-limit-requests"] = s.rpm_text
                headers["x-ratelimit-remaining-requests"] = str(lease.remaining("r", s.rpm))
                headers["x-ratelimit-reset-requests"] = reset
            if s.tpm:
                headers["x-ratelimit-limit-tokens"] = s.tpm_text
                headers["x-ratelimit-remaining-tokens"] = str(lease.remaining("t", s.tpm))
                headers["x-ratelimit-reset-tokens"] = reset

    async def _per_day(self, grant: Grant, s: Subject, key_level: bool, now: datetime) -> None:
        assert s.rpd
        start, end = day_window(now)
        doc_id = f"{s.id}|d|{start.date().isoformat()}"
        lease = await self._holdings.take(doc_id, end, {"r": s.rpd}, {"r": 1})
        if lease is None:
            wait = seconds_until(now, end) or 1
            raise with_limit_headers(
                refusal(
                    f"{s.code_prefix}rate_limit_exceeded",
                    f"Rate limit reached for {s.label}: {s.rpd} requests per day.",
                    wait,
                ),
                "requests",
                s.rpd,
                0,
                wait,
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

    @staticmethod
    def _tokens_refusal(s: Subject, tokens: int, wait: int, left: int | None = None) -> ApiError:
        assert s.tpm
        error = refusal(
            f"{s.code_prefix}tokens_rate_limit_exceeded",
            f"Token rate limit reached for {s.label}: {s.tpm} tokens per minute "
            f"(this request needs about {tokens}).",
            wait,
        )
        return with_limit_headers(error, "tokens", s.tpm, left, wait)

    async def hold(self, grant: Grant, doc_id: str, limit: int, label: str) -> None:
        """Hold one of ``limit`` concurrent slots (e.g. realtime sessions) until settled."""
        try:
            await self._parallel(grant, doc_id, limit, label)
        except ApiError as exc:
            await self._undo(grant.parallel)
            meters.refused(exc.code)
            raise

    async def _parallel(self, grant: Grant, doc_id: str, limit: int, label: str) -> None:
        holdings = self._holdings
        if not (holdings.slot_held(doc_id, limit) or await holdings.slot(doc_id, limit)):
            raise refusal(
                "parallel_limit_exceeded",
                f"Too many requests in flight for {label}: the limit is {limit}.",
                1,
            )
        grant.parallel.append(Held(PARALLEL, doc_id, self._holdings.slot_path, 1))

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
                self._charge(budget, cost)
            self._arm()

    def charge_later(self, budget: Budget, cost: float) -> None:
        """Charge a budget with the next settlement batch (a realtime charge that could
        not be made at once because the store was down)."""
        self._charge(budget, cost)
        self._arm()

    async def release(self, grant: Grant) -> None:
        """A request that will not be charged (failed before any upstream work)."""
        if not grant.settled:
            grant.settled = True
            await self._undo(grant.held + grant.parallel)

    @property
    def pending_writes(self) -> int:
        """Documents and budget accounts with settled changes not yet written."""
        return sum(len(changes) for changes in self._deferred.values()) + len(self._charges)

    def _owed(self, account: tuple[str, str]) -> float:
        """What this instance charged ``account`` that the store has not confirmed."""
        owed = self._sending.get(account, 0.0)
        charged = self._charges.get(account)
        if charged is not None:
            owed += charged[1]
        unsure = self._spends.unsure.get(account)
        if unsure is not None:
            owed += unsure[1][1]
        return owed

    def _send_count(self, account: tuple[str, str], amount: float) -> None:
        left = self._sending.get(account, 0.0) + amount
        if abs(left) < 1e-12:  # float sums of the same costs: nothing out
            self._sending.pop(account, None)
        else:
            self._sending[account] = left

    def _charge(self, budget: Budget, cost: float) -> None:
        account = budget.account  # cheaper to hash than the Budget
        charged = self._charges.get(account)
        self._charges[account] = (budget, cost + charged[1] if charged else cost)

    def _free_slot(self, doc_id: str) -> None:
        if self._holdings.free_slot(doc_id):
            self._arm()  # the batch decides what of it goes back to the store

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
        except Exception as exc:
            log_failure(log, exc, "writing settled limits failed")
        finally:
            self._settling = None
            unsure = self._counters.unsure or self._spends.unsure
            if self._deferred or self._charges or self._holdings.has_idle or unsure:
                self._arm()

    async def close(self) -> None:
        """Shutting down (no request in flight): give back every slot and the unused part
        of every current lease, so other instances can use them at once, then flush."""
        for collection, doc_id, name, amount in self._holdings.let_go():
            self._defer(collection, doc_id, name, -amount)
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
        self._counters.new_round()
        deferred, self._deferred = self._deferred, {}
        path = self._holdings.slot_path
        for doc_id, count in self._holdings.idle_slots().items():
            counters = deferred.setdefault(PARALLEL, {}).setdefault(doc_id, {})
            counters[path] = counters.get(path, 0) - count
        charges, self._charges = self._charges, {}
        for account, (_, cost) in charges.items():
            self._send_count(account, cost)
        for collection in {**deferred, **self._counters.unsure}:
            changes = deferred.get(collection, {})
            live = {id: inc for id, inc in changes.items() if any(inc.values())}
            had_turn, _ = await self._counters.send(collection, live or None)
            if not had_turn:  # newer changes wait their turn
                for id, inc in changes.items():
                    for name, amount in inc.items():
                        self._defer(collection, id, name, amount)
        made: list[Charge] = []
        self._spends.store_down = self._counters.store_down  # one round for both kinds
        for account in {**charges, **self._spends.unsure}:
            charge = charges.get(account)
            unsure = self._spends.unsure.get(account)
            out = (charge[1] if charge else 0.0) + (unsure[1][1] if unsure else 0.0)
            self._send_count(account, out - (charge[1] if charge else 0.0))  # send() takes it
            try:
                had_turn, written = await self._spends.send(account, charge)
            finally:
                # Taken off in the step the answer arrives (add_spend made the spend it
                # returned the cached one), or back in _charges or unsure for later.
                self._send_count(account, -out)
            made += [c for c in written if c is not None]
            if not had_turn and charge is not None:
                self._charge(*charge)  # waits its turn
        if made and self._on_charges is not None:
            await self._on_charges(made)

    async def _undo(self, held: list[Held]) -> None:
        """Give back what a refused or failed request took: window counts to this
        instance's lease when it still holds one (no round trip), the rest to the store."""
        for h in reversed(held):
            if h.collection == PARALLEL:
                self._free_slot(h.id)
                continue
            if h.collection == WINDOWS and self._holdings.give_back(h.id, h.field, int(h.amount)):
                continue
            try:
                await self._store.increment(
                    h.collection, h.id, {h.field: -h.amount}, upsert=False, returning=False
                )
            except Exception as exc:
                log_failure(log, exc, "could not release %s %s", h.collection, h.id)
        held.clear()
