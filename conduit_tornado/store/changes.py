"""Change counters: how an admin change made on one instance reaches the others.

Every admin write that other instances cache (keys, groups, providers and models, the
master key) bumps a counter document of its kind in the shared store, recording the
document it changed. Each instance reads the counters every CONDUIT_CHANGE_POLL seconds
(or when a MongoDB change stream says they moved) and, for each kind whose counter
moved, drops what it cached: just the one document when the counter moved by one,
everything of that kind otherwise. Reading a handful of small documents a second is the
whole cost; the caches' own expiry (key_cache_ttl, catalog_refresh) stays as a backstop
for a bump that failed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from .base import CHANGES, Doc, Store, log_failure

log = logging.getLogger("conduit.changes")

KEYS = "keys"
GROUPS = "groups"
CATALOG = "catalog"  # providers and model mappings
MASTER_KEY = "master_key"

#: Told of a change: the document's id, or None for "any of them may have changed".
Listener = Callable[[str | None], Awaitable[None] | None]


async def bump(store: Store, kind: str, id: str | None) -> None:
    """Bump a kind's counter (the stores that share data between processes use this)."""
    await store.increment(
        CHANGES, kind, {"n": 1}, set={"at": datetime.now(UTC), "id": id}, returning=False
    )


async def counters(store: Store) -> dict[str, Doc]:
    """Every change counter, by kind (the stores that share data use this)."""
    return {str(d["_id"]): d for d in await store.find(CHANGES, {}, limit=1000)}


async def note(store: Store, kind: str, id: str | None = None) -> None:
    """Tell the other instances, after an admin write. The write itself has been made, so
    a failure here is logged, not raised: they then see it when their caches expire."""
    try:
        await store.note_change(kind, id)
    except Exception as exc:
        log_failure(log, exc, "could not announce a change of %s to other instances", kind)


class ChangeFeed:
    """This instance's reader of the change counters."""

    def __init__(self, store: Store, poll: float) -> None:
        self._store = store
        self._poll = poll
        self._seen: dict[str, int] | None = None
        self._listeners: dict[str, list[Listener]] = {}
        self.applied = 0  # changes acted on (tests, and the metric)
        self.on_applied: Callable[[str], None] | None = None

    def on(self, kind: str, listener: Listener) -> None:
        self._listeners.setdefault(kind, []).append(listener)

    async def start(self) -> None:
        """Read where the counters stand: changes from here on are acted on."""
        self._seen = {
            k: int(d.get("n") or 0) for k, d in (await self._store.read_changes()).items()
        }

    async def check(self) -> int:
        """Read the counters once and act on what moved; returns how many kinds moved."""
        now = await self._store.read_changes()
        if self._seen is None:
            self._seen = {k: int(d.get("n") or 0) for k, d in now.items()}
            return 0
        moved = 0
        for kind, doc in now.items():
            n = int(doc.get("n") or 0)
            before = self._seen.get(kind, 0)
            if n == before:
                continue
            moved += 1
            # Moved by exactly one: that write's document. Else several writes (or a
            # counter started over): drop everything of the kind.
            which = doc.get("id") if n == before + 1 else None
            for listener in self._listeners.get(kind, ()):
                try:
                    result = listener(str(which) if which is not None else None)
                    if result is not None:
                        await result
                except Exception as exc:
                    log_failure(log, exc, "applying a change of %s failed", kind)
            self._seen[kind] = n
            self.applied += 1
            if self.on_applied is not None:
                self.on_applied(kind)
        return moved

    async def run(self) -> None:
        while True:
            try:
                await self._store.wait_for_change(self._poll)
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_failure(log, exc, "reading the change counters failed")
                await asyncio.sleep(self._poll)
