"""Budgets: what keys, groups and end users spend per period, checked before a request
and charged after it.

The current period's spend lives on the key / group document (and per end user in
``user_budgets``). A request starts only if the spend is under budget, and its cost is
added atomically when it ends, resetting at the period boundary. The spend a check reads
is cached per instance for ``spend_ttl`` seconds, and other instances' charges show
within the TTL; the TTL saves a store round trip per request.

This instance's own charges count at once: a check adds what this instance has charged
and the store has not yet confirmed (``owed``: the settlement batch, limits.py, writes
charges behind). When a charge's write is answered, the answer (the spend including it)
replaces the cached spend in the same step as the charge leaves ``owed``, so it is never
counted twice nor missed. A store read that races a charge's write may count it twice
until that write is answered (refusing early, never late), and a read that a write's
answer overtook is not kept (``_seq``).

What is promised: a request is admitted only while the spend (with this instance's own
charges) is under the budget. Requests already admitted when the budget is crossed finish
and are charged in full (their cost is known only at the end), so the overshoot is at most
the cost of the requests in flight at that moment: one request for a client that waits for
each answer before sending the next. Other instances' charges may add to it within the TTL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from conduit_tornado.core.clock import Clock
from conduit_tornado.core.errors import refusal
from conduit_tornado.store import SETTLED, Doc, Store
from conduit_tornado.store.once_writes import marks

from .periods import budget_period, seconds_until

USER_BUDGETS = "user_budgets"
# What a check reads of an account's document (never the whole of it); the budget's own
# settings come from the key or group document the request already holds.
SPENT = ("spend", "period_start")
SPEND = ("spend",)
_SPENT_CACHE_MAX = 100_000


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
    #: (collection, id): what caches and pending charges are keyed by, made once.
    account: tuple[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "account", (self.collection, self.id))


@dataclass(slots=True)
class Account:
    """A budget a request is charged to, and what its check needs: the document holding
    the limit and period settings (None: no budget to enforce), and the refusal's words."""

    budget: Budget
    gate: Doc | None
    label: str
    code: str


@dataclass(slots=True)
class Charge:
    budget: Budget
    before: float
    after: float
    period_start: datetime


def _own_account(collection: str, kind: str, name: str, doc: Doc, label: str) -> Account:
    """The account of a key or group document, whose budget settings are its own."""
    budget = Budget(
        collection,
        doc["_id"],
        kind,
        name,
        doc.get("budget_duration"),
        doc["created_at"],
        doc.get("max_budget"),
    )
    gate = doc if doc.get("max_budget") is not None else None
    return Account(budget, gate, label, "budget_exceeded")


class Budgets:
    def __init__(self, store: Store, clock: Clock, spend_ttl: float = 1.0) -> None:
        self._store = store
        self._clock = clock
        self.spend_ttl = spend_ttl
        # (collection, id) -> (monotonic expiry, SPENT fields, _seq when learnt)
        self._spent: dict[tuple[str, str], tuple[float, Doc, int]] = {}
        self._seq = 0  # counts the charge answers noted, to tell a read they overtook
        #: What this instance charged to an account and the store has not confirmed
        #: (the limiter's settlement batches set it): counted by every check.
        self.owed: Callable[[tuple[str, str]], float] = lambda account: 0.0

    def accounts(self, key: Doc, group: Doc | None, user: str | None) -> list[Account]:
        """The accounts a request of ``key`` (for ``user``) is charged to: its own, its
        group's, its end user's. Pure: the limiter works this out once per key document."""
        accounts = [_own_account("keys", "key", key["name"], key, "this key")]
        if group is not None:
            label = f"group '{group['_id']}'"
            accounts.append(_own_account("groups", "group", group["_id"], group, label))
        per_user = key.get("user_limits") or {}
        if user and per_user.get("max_budget") is not None:
            duration = per_user.get("budget_duration") or key.get("budget_duration")
            budget = Budget(
                USER_BUDGETS,
                f"{key['_id']}|{user}",
                "user",
                user,
                duration,
                key["created_at"],
                float(per_user["max_budget"]),
                upsert=True,
            )
            gate = {
                "created_at": key["created_at"],
                "max_budget": per_user["max_budget"],
                "budget_duration": duration,
            }
            accounts.append(Account(budget, gate, f"user '{user}'", "user_budget_exceeded"))
        return accounts

    async def check(self, accounts: list[Account], now: datetime) -> None:
        """Refuse (429) if any of ``accounts`` with a budget has spent it."""
        for account in accounts:
            if account.gate is not None:
                budget = account.budget
                hit = self._spent.get(budget.account)
                if hit is not None and hit[0] > self._clock.monotonic():
                    spent = hit[1]  # read within spend_ttl
                else:
                    spent = await self._read_spent(budget.collection, budget.id)
                owed = self.owed(budget.account)
                self._gate(account.gate, spent, owed, account.label, account.code, now)

    async def _read_spent(self, collection: str, id: str) -> Doc:
        """An account's current spend (its SPENT fields) from the store, kept for
        ``spend_ttl``."""
        seq = self._seq
        doc = await self._store.get(collection, id, SPENT) or {}
        hit = self._spent.get((collection, id))
        if hit is not None and hit[2] > seq:
            # A charge of this instance was answered while this read was out: its answer
            # is the newer spend (the read may predate the charge, which left ``owed``).
            return hit[1]
        self._keep(collection, id, doc, seq)
        return doc

    def _keep(self, collection: str, id: str, doc: Doc, seq: int) -> None:
        now = self._clock.monotonic()
        if len(self._spent) >= _SPENT_CACHE_MAX:
            self._spent = {k: v for k, v in self._spent.items() if v[0] > now}
        # Kept even with a TTL of 0 (expired at once): a read it overtook must see it.
        self._spent[(collection, id)] = (now + self.spend_ttl, doc, seq)

    def _note_spent(self, collection: str, id: str, spend: float, start: datetime) -> None:
        """This instance's own charge, as written: the spend the store answered (which
        includes it) is the account's spend from now on."""
        self._seq += 1
        self._keep(collection, id, {"spend": spend, "period_start": start}, self._seq)

    def forget_spent(self, collection: str, id: str) -> None:
        self._spent.pop((collection, id), None)

    def _gate(
        self, account: Doc, spent: Doc, owed: float, label: str, code: str, now: datetime
    ) -> None:
        """429 if ``account``'s budget is used up by ``spent`` in the current period and
        ``owed`` (this instance's charges not yet written, which go to the current period
        when they are: add_spend works the period out at the write)."""
        start, end = budget_period(account.get("budget_duration"), account["created_at"], now)
        spend = (spent.get("spend") or 0.0) if spent.get("period_start") == start else 0.0
        spend += owed
        limit = float(account["max_budget"])
        if spend >= limit:
            wait = seconds_until(now, end)
            raise refusal(
                code,
                f"Budget exhausted for {label}: spent ${spend:.4f} of ${limit:.4f}"
                + (f"; it resets at {end.isoformat()}." if end else "."),
                wait if wait is not None else 86_400 * 365,
            )

    async def add_spend(
        self, budget: Budget, cost: float, once: tuple[str, int] | None = None
    ) -> Charge | None:
        """Add cost to the current period's spend, starting a new period if one began.
        Returns None if the account no longer exists, or, with ``once=(writer, batch)``
        (see Store.increment_many), if it took this batch already."""
        start, _ = budget_period(budget.duration, budget.anchor, self._clock.now())
        store, coll, doc_id = self._store, budget.collection, budget.id
        mark, fresh = marks(once)  # fresh: matches only a document without this batch
        for _ in range(3):
            doc = await store.increment(
                coll,
                doc_id,
                {"spend": cost, "total_spend": cost},
                set=mark,
                where={"period_start": start, **fresh},
                upsert=False,
                returning=SPEND,
            )
            if doc is None:  # a new period began: reset it, unless another instance just did
                doc = await store.increment(
                    coll,
                    doc_id,
                    {"total_spend": cost},
                    set={"spend": cost, "period_start": start, **mark},
                    where={"period_start": {"$ne": start}, **fresh},
                    upsert=False,
                    returning=SPEND,
                )
            if doc is None:
                current = await store.get(coll, doc_id, (*SPEND, SETTLED))
                if current is not None:
                    if once and (current.get(SETTLED) or {}).get(once[0]) == once[1]:
                        self.forget_spent(coll, doc_id)  # a cached spend may predate it
                        return None  # added before, by a try whose answer was lost
                elif not budget.upsert:
                    return None  # deleted meanwhile
                else:
                    doc = await store.increment(
                        coll,
                        doc_id,
                        {"spend": cost, "total_spend": cost},
                        set_on_insert={"period_start": start, "created_at": budget.anchor},
                        set=mark,
                        where=fresh,
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
