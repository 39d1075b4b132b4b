"""Pruning what the store keeps for instances that are gone.

Each instance leaves entries on shared documents: ``settled.<instance>`` (the number of
its last batch a document took, so a batch sent again counts once: store/once_writes.py)
and ``by.<instance>`` on parallel-slot documents (the slots it holds). An instance that
stopped, crashed or was scaled away leaves them behind for good; a live instance removes
those of instances whose heartbeat is older than ``instance_ttl``.

Why that keeps counts exact. ``by.<instance>`` of an instance whose heartbeat is older
than limits.INSTANCE_TTL is not counted already. ``settled.<instance>`` matters only to
that instance's own batches sent again. An instance sends batches only within
``instance_ttl / 2`` of a heartbeat that reached the store (Limiter.heartbeat), so every
batch it sent was long answered or abandoned when pruning begins (store operations time
out in seconds). Pruning claims the instance's document first, atomically and only while
its heartbeat is still old, and deletes it last; meanwhile that instance's heartbeat
cannot succeed, so it cannot start sending again mid-way. When it comes back it finds
its document gone, and forgets what it held there (pruned_while_away).

(Clocks: ``seen`` is written by the instance's clock and compared with the pruner's;
they must agree to well within ``instance_ttl / 2``.)
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from conduit_tornado.core.clock import Clock
from conduit_tornado.store import SETTLED, Store, log_failure
from conduit_tornado.store.once_writes import OnceWrites

from .budgets import USER_BUDGETS
from .holdings import PARALLEL, WINDOWS, Holdings

log = logging.getLogger("conduit.pruning")
INSTANCES = "instances"
#: The collections whose documents take batches under ``once`` (limits.py, budgets.py).
SETTLED_IN = ("keys", "groups", USER_BUDGETS, WINDOWS, PARALLEL)
_BATCH = 100  # dead instances pruned per round at most


def pruned_while_away(
    counters: OnceWrites[Any, Any, Any],
    spends: OnceWrites[Any, Any, Any],
    holdings: Holdings,
    logger: logging.Logger,
) -> None:
    """This instance's heartbeat found its document pruned: other instances took it for
    dead. The slots it held were removed from the store, so it holds none now. Batches
    it sent without learning their outcome can no longer be told apart from ones taken
    (their marks are gone), so they are dropped: counted at most once, perhaps not at all.
    Batches it kept back meanwhile (Limiter._may_send) were never sent, and go out."""
    lost = counters.forget_tried() + spends.forget_tried()
    holdings.forget_slots()
    logger.error(
        "this instance was cut off from the store past CONDUIT_INSTANCE_TTL and was pruned "
        "by the others; %d settlement batches of unknown outcome were dropped",
        lost,
    )


class Pruner:
    def __init__(self, store: Store, clock: Clock, instance: str, ttl: float) -> None:
        self._store = store
        self._clock = clock
        self._instance = instance
        self._ttl = ttl

    async def prune(self) -> list[str]:
        """One round: prune every instance whose heartbeat is older than the TTL;
        return their ids."""
        cutoff = self._clock.now() - timedelta(seconds=self._ttl)
        old = {"seen": {"$lt": cutoff}}
        pruned = []
        for doc in await self._store.find(INSTANCES, old, limit=_BATCH):
            dead = str(doc["_id"])
            if dead == self._instance:
                continue
            # Claimed only while still old: a heartbeat that got in first keeps it alive,
            # and from here on none can (Limiter.heartbeat's filter).
            if await self._store.update(INSTANCES, dead, {"pruning": True}, where=old) is None:
                continue
            for collection in SETTLED_IN:
                paths = [f"{SETTLED}.{dead}"]
                if collection == PARALLEL:
                    paths.append(f"by.{dead}")
                await self._store.unset_everywhere(collection, paths)
            await self._store.delete(INSTANCES, dead)  # last: a failure is resumed next round
            log.info("pruned instance %s (no heartbeat for %.0fs)", dead, self._ttl)
            pruned.append(dead)
        return pruned

    async def run(self) -> None:
        # Often enough that nothing lingers long past the TTL, rarely enough to cost
        # nothing: the query is one indexed-size read of the instances collection.
        every = max(5.0, self._ttl / 10)
        while True:
            await asyncio.sleep(every)
            try:
                await self.prune()
            except Exception as exc:
                log_failure(log, exc, "pruning dead instances failed")
