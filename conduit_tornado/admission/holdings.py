"""What this instance holds of counters it shares with other instances: leases on rate
windows and parallel slots (see limits.py for the guarantees they keep).

A window with a limit of 100 or more is counted in leases: the instance takes a fiftieth
of the limit (at most 64 requests) in one conditional ``$inc`` and admits from that without
a round trip, falling back to one request at a time when a whole lease no longer fits.
Parallel slots are taken the same way, reused locally as requests end, and returned when
idle. Every store operation here is one per document at a time and shielded from
cancellation, so what the store counted for this instance is never lost track of.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from conduit_tornado.core.clock import Clock
from conduit_tornado.store import Doc, Store

T = TypeVar("T")
WINDOWS = "limit_windows"
PARALLEL = "parallel"
LEASE_SHARE = 50  # a lease takes this fraction of a limit ...
LEASE_MAX = 64  # ... for at most this many requests


def lease_size(limit: int, per: int = 1) -> int:
    """How much to take at once: a fiftieth of ``limit``, for at most LEASE_MAX requests
    of ``per`` each, and never less than one request's ``per``."""
    return max(per, min(limit // LEASE_SHARE, per * LEASE_MAX))


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
    used: bool = True  # since the last sweep


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


class Holdings:
    """This instance's leases and slots. Giving capacity back to the store is the
    caller's (it writes it behind); methods here say what to give back."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        instance: str,
        look_again: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self.slot_path = f"by.{instance}"  # this instance's counter on a slot document
        #: Instances whose heartbeat is fresh: only their slots count.
        self.live: set[str] = {instance}
        #: Holders of slots that were not live when ``look_again`` last refreshed ``live``.
        self.gone: set[str] = set()
        self._look_again = look_again
        self._leases: dict[str, Lease] = {}
        self._leasing: dict[str, asyncio.Future[None]] = {}
        self._leases_pruned = 0.0  # monotonic time ended leases were last dropped
        self._slots: dict[str, Slots] = {}
        self._growing: dict[str, asyncio.Future[None]] = {}
        self._idle: set[str] = set()  # slot documents with slots freed since idle_slots()

    # -- windows --------------------------------------------------------------------------

    def take_held(self, doc_id: str, limits: dict[str, int], need: dict[str, int]) -> Lease | None:
        """take()'s usual case, without a coroutine: ``need`` from the lease this instance
        holds under these limits. None: ask take()."""
        lease = self._leases.get(doc_id)
        if lease is not None and lease.limits == limits and lease.take(need):
            return lease
        return None

    async def take(
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

    def give_back(self, doc_id: str, name: str, amount: int) -> bool:
        """Return what a refused or failed request took to the lease it came from; False
        if this instance no longer holds one (the caller gives it back to the store)."""
        lease = self._leases.get(doc_id)
        if lease is None:
            return False
        lease.have[name] = lease.have.get(name, 0) + amount
        return True

    async def _lease(
        self, doc_id: str, end: datetime, limits: dict[str, int], need: dict[str, int]
    ) -> Lease | None:
        """Count more of a window for this instance: a lease's worth if it fits, else
        just ``need``. None if not even that fits."""
        lease = self._leases.get(doc_id)
        have = lease.have if lease is not None else {}
        short = {f: n for f, n in need.items() if n and have.get(f, 0) < n}
        ask = {f: lease_size(limits[f], n) for f, n in short.items()}
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

    # -- parallel slots -------------------------------------------------------------------

    def slot_held(self, doc_id: str, limit: int) -> bool:
        """slot()'s usual case, without a coroutine: reuse a slot this instance holds idle.
        False: ask slot()."""
        slots = self._slots.get(doc_id)
        if slots is None or slots.limit != limit or slots.in_use >= slots.held:
            return False
        slots.in_use += 1
        slots.used = True
        return True

    async def slot(self, doc_id: str, limit: int) -> bool:
        """Take one of ``limit`` parallel slots: one this instance holds idle, else more
        from the store (one such operation per document at a time)."""
        while True:
            slots = self._slots.get(doc_id)
            if slots is None:
                slots = self._slots[doc_id] = Slots(limit)
            slots.limit = limit
            if self.slot_held(doc_id, limit):
                return True
            grow = functools.partial(self._grow, doc_id, slots)
            ran, gained = await _in_turn(self._growing, doc_id, grow)
            if ran and not gained:
                return False

    async def _grow(self, doc_id: str, slots: Slots) -> int:
        """Hold more slots: a lease's worth, less any that would pass the limit. Returns
        how many were gained."""
        path = self.slot_path
        ask = lease_size(slots.limit)
        doc = await self._store.increment(PARALLEL, doc_id, {path: ask})
        assert doc is not None
        by: dict[str, int] = doc.get("by") or {}
        unknown = [i for i, n in by.items() if n > 0 and i not in self.live and i not in self.gone]
        if unknown and self._look_again is not None:
            # An instance started since the last heartbeat (a worker just started, say)
            # holds slots here: uncounted, they would be handed out twice. Learn now who
            # is live; holders still not are dead ones, not looked for again.
            await self._look_again()
            self.gone.update(i for i in unknown if i not in self.live)
        running = sum(n for inst, n in by.items() if inst in self.live)
        over = max(0, min(running - slots.limit, ask))
        slots.held += ask - over
        if over:  # past the limit: give back what does not fit, at once
            await self._store.increment(
                PARALLEL, doc_id, {path: -over}, upsert=False, returning=False
            )
        return ask - over

    def free_slot(self, doc_id: str) -> bool:
        """A request holding a slot ended: the slot is idle, for this instance to reuse
        until idle_slots() hands it back. True if there was such a slot."""
        slots = self._slots.get(doc_id)
        if slots is None or slots.in_use == 0:
            return False
        slots.in_use -= 1
        self._idle.add(doc_id)
        return True

    @property
    def has_idle(self) -> bool:
        return bool(self._idle)

    def idle_slots(self) -> dict[str, int]:
        """Slots to give back now ({document: count}): all idle ones below a limit of 100,
        else those past a lease's worth."""
        returned: dict[str, int] = {}
        for doc_id in self._idle:
            slots = self._slots.get(doc_id)
            if slots is None:
                continue
            extra = slots.held - slots.in_use - (lease_size(slots.limit) - 1)
            if extra > 0:
                slots.held -= extra
                returned[doc_id] = extra
            if slots.held == 0 and doc_id not in self._growing:
                del self._slots[doc_id]  # nothing held: forget it (keys come and go)
        self._idle.clear()
        return returned

    def unused_slots(self) -> dict[str, int]:
        """Every slot of a key or group unused since the last call: give them all back,
        so idle keys hold nothing other instances could use (called each heartbeat)."""
        returned: dict[str, int] = {}
        for doc_id, slots in list(self._slots.items()):
            if not slots.used and slots.in_use == 0 and doc_id not in self._growing:
                if slots.held:
                    returned[doc_id] = slots.held
                del self._slots[doc_id]
            slots.used = False
        return returned

    # -- shutdown -------------------------------------------------------------------------

    def let_go(self) -> list[tuple[str, str, str, int]]:
        """Shutting down: everything held and not in use, as (collection, document,
        field, amount) to give back, so other instances can use it at once."""
        now = self._clock.now()
        out: list[tuple[str, str, str, int]] = []
        for doc_id, lease in self._leases.items():
            if lease.end > now:
                out += [(WINDOWS, doc_id, f, n) for f, n in lease.have.items() if n]
                lease.have.clear()
        for doc_id, slots in self._slots.items():
            if slots.held > slots.in_use:
                out.append((PARALLEL, doc_id, self.slot_path, slots.held - slots.in_use))
                slots.held = slots.in_use
        return out
