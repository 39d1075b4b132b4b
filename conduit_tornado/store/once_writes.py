"""Background writes that count once, whatever the store does to them.

A counter write that fails may have been applied all the same (a timeout after the
server did it). Sent again as a new write, it would count twice. So each write goes out
under a number. The documents remember the last number each writer gave them (under
SETTLED), and skip a number they have taken (``marks``). One whose outcome is unknown is
sent again as it was, under the same number, before anything newer for the same key.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from .base import SETTLED, Doc, StoreUnavailable, log_failure

K = TypeVar("K")
V = TypeVar("V")
R = TypeVar("R")
Once = tuple[str, int]  # (writer, number)


def marks(once: Once | None) -> tuple[Doc, Doc]:
    """What a write under ``once`` sets, and the filter that makes it skip a document
    that took it already (both empty without ``once``)."""
    if once is None:
        return {}, {}
    path = f"{SETTLED}.{once[0]}"
    return {path: once[1]}, {path: {"$ne": once[1]}}


class OnceWrites(Generic[K, V, R]):
    """One writer's background writes, per key. ``write(key, value, once)`` does one.

    A round of writes starts with ``new_round()``. Once a write of the round finds the
    store unreachable, the rest of the round is not tried (each would wait out the
    timeout again). Its work stays for the next round."""

    def __init__(
        self,
        writer: str,
        write: Callable[[K, V, Once], Awaitable[R]],
        logger: logging.Logger,
        what: Callable[[K, V], str],
    ) -> None:
        self.writer = writer
        self._write = write
        self._log = logger
        self._what = what  # a failure's log line: "<what> failed; will retry"
        self._numbers = itertools.count(1)
        self._unsure: dict[K, tuple[int, V]] = {}
        self._tried: set[K] = set()  # keys whose unsure write went out (not only queued)
        self.store_down = False
        #: Whether writes may go out now (see Limiter.heartbeat): a writer that may have
        #: been pruned must not send, since the marks that make a resend harmless may be
        #: gone. Work not sent stays for a later round, as in an outage.
        self.may_send: Callable[[], bool] = lambda: True

    def new_round(self) -> None:
        self.store_down = False

    @property
    def unsure(self) -> dict[K, tuple[int, V]]:
        """Writes whose outcome is unknown, by key: each is sent again in the next round."""
        return self._unsure

    async def send(self, key: K, new: V | None) -> tuple[bool, list[R]]:
        """Send ``key``'s unsure write if it has one, then ``new``. Returns whether
        ``new`` had its turn (False: it was not sent, and the caller keeps it for a later
        round) and the results of the writes that went through."""
        results: list[R] = []
        unsure = self._unsure.pop(key, None)
        if unsure is not None and not await self._try(key, *unsure, results):
            self._unsure[key] = unsure
            return False, results
        if new is not None:
            number = next(self._numbers)
            if not await self._try(key, number, new, results):
                self._unsure[key] = (number, new)
        return True, results

    async def _try(self, key: K, number: int, value: V, results: list[R]) -> bool:
        if self.store_down or not self.may_send():
            return False
        try:
            results.append(await self._write(key, value, (self.writer, number)))
        except Exception as exc:
            self._tried.add(key)
            self.store_down = isinstance(exc, StoreUnavailable)
            log_failure(self._log, exc, "%s failed; will retry", self._what(key, value))
            return False
        self._tried.discard(key)
        return True

    def forget_tried(self) -> int:
        """Drop the unsure writes that went out (the store may have taken them), keeping
        those never sent; return how many were dropped. For a writer whose marks were
        pruned (admission/pruning.py): sent again, a taken write would count twice."""
        dropped = 0
        for key in self._tried:
            dropped += self._unsure.pop(key, None) is not None
        self._tried.clear()
        return dropped
