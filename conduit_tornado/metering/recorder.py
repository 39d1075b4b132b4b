"""Request logs, usage rollups and spend, written behind the request path.

Handlers call ``record()`` (no I/O). A background task flushes every
``log_flush_interval``: logs with one ``insert_many``; rollups as one atomic ``$inc`` per
distinct (key, model, user, day), aggregated since the last flush. (Spend, which budgets
enforce, is charged at once per request by the limiter.)
A failed flush keeps its work for the next one, and counts it once when it goes through
(logs by their ids, rollups by batch numbers); logs beyond ``log_queue_max`` are dropped
and counted, never silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import secrets
from collections import deque
from datetime import datetime
from typing import Any

from conduit_tornado.admission.keys import VirtualKey
from conduit_tornado.core import meters
from conduit_tornado.core.clock import Clock
from conduit_tornado.core.ids import IdSequence
from conduit_tornado.core.settings import Settings
from conduit_tornado.store import DuplicateError, Store, log_failure
from conduit_tornado.store.once_writes import Once, OnceWrites, marks

log = logging.getLogger("conduit.accounting")
LOGS = "request_logs"
USAGE = "usage"
_SUMMED = ("prompt_tokens", "completion_tokens", "cached_tokens", "total_tokens")
new_log_id = IdSequence("log_")


def new_log_entry(
    request_id: str,
    now: datetime,
    key: VirtualKey,
    endpoint: str,
    model: str,
    *,
    stream: bool,
    user: str | None,
) -> dict[str, Any]:
    """The request-log document every model-calling route starts from."""
    return {
        "_id": new_log_id(),
        "request_id": request_id,
        "created_at": now,
        "key_id": key.id,
        "key_name": key.name,
        "group": key.group,
        "endpoint": endpoint,
        "model": model,
        "stream": stream,
        "user": user,
        "status": 200,
    }


@functools.lru_cache(maxsize=4096)
def usage_id(day: str, key_id: str, model: str, user: str) -> str:
    digest = hashlib.sha256(f"{key_id}\x00{model}\x00{user}".encode()).hexdigest()[:24]
    return f"{day}:{digest}"


_Rollup = tuple[dict[str, Any], dict[str, float]]  # (fields set on creation, counts to add)


class Recorder:
    def __init__(self, store: Store, settings: Settings, clock: Clock) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._logs: deque[dict[str, Any]] = deque()
        self._rollups: dict[str, tuple[dict[str, Any], dict[str, float]]] = {}
        self._last_used: dict[str, datetime] = {}
        self._lock = asyncio.Lock()
        self.dropped = 0
        self.written = 0
        # Each rollup write counts once (store/once_writes.py).
        self._rollup_writes: OnceWrites[str, _Rollup, None] = OnceWrites(
            "rec_" + secrets.token_hex(6), self._roll_up, log, lambda rid, _: f"usage rollup {rid}"
        )

    def record(self, entry: dict[str, Any]) -> None:
        """Queue one finished request (a request log document)."""
        if len(self._logs) >= self._settings.log_queue_max:
            self.dropped += 1
            meters.QUEUE_DROPPED.labels("request_logs").inc()
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("request log queue full: %d logs dropped so far", self.dropped)
        else:
            self._logs.append(entry)
        if "provider" in entry:  # answered upstream: its model is one the catalog has
            meters.usage_recorded(
                entry["model"],
                entry.get("group"),
                entry.get("prompt_tokens") or 0,
                entry.get("completion_tokens") or 0,
                entry.get("cost") or 0.0,
            )
        key_id = entry.get("key_id")
        if not key_id:
            return
        self._last_used[key_id] = entry["created_at"]
        day = entry["created_at"].date().isoformat()  # YYYY-MM-DD, without strftime's cost
        user = entry.get("user") or ""
        rid = usage_id(day, key_id, entry["model"], user)
        if rid not in self._rollups:
            fields = {"day": day, "key_id": key_id, "model": entry["model"], "user": user}
            self._rollups[rid] = (fields, {})
        inc = self._rollups[rid][1]
        inc["requests"] = inc.get("requests", 0) + 1
        if entry.get("status", 200) >= 400:
            inc["errors"] = inc.get("errors", 0) + 1
        for name in _SUMMED:
            inc[name] = inc.get(name, 0) + (entry.get(name) or 0)
        cost = entry.get("cost")
        if cost:
            inc["cost"] = inc.get("cost", 0.0) + cost
        if entry.get("unpriced"):
            inc["unpriced_requests"] = inc.get("unpriced_requests", 0) + 1
        if entry.get("estimated"):
            inc["estimated_requests"] = inc.get("estimated_requests", 0) + 1

    @property
    def pending(self) -> int:
        return len(self._logs)

    @property
    def pending_rollups(self) -> int:
        return len(self._rollups)

    async def flush(self) -> None:
        async with self._lock:  # one flush at a time: the periodic one and shutdown's
            await self._flush_logs()
            await self._flush_counters()

    async def _flush_logs(self) -> None:
        while self._logs:
            batch = [
                self._logs.popleft()
                for _ in range(min(len(self._logs), self._settings.log_batch_size))
            ]
            try:
                await self._write_logs(batch)
            except Exception as exc:
                self._logs.extendleft(reversed(batch))  # keep order; retried next flush
                log_failure(log, exc, "writing %d request logs failed; will retry", len(batch))
                return
            self.written += len(batch)
            await asyncio.sleep(0)  # let requests run between batches: no long stalls

    async def _write_logs(self, batch: list[dict[str, Any]]) -> None:
        try:
            await self._store.insert_many(LOGS, batch)
        except DuplicateError:
            # Some of these were written before: an earlier try failed (a timeout, say)
            # after the server had applied part of it. Write the others one at a time.
            for entry in batch:
                with contextlib.suppress(DuplicateError):
                    await self._store.insert(LOGS, entry)

    async def _flush_counters(self) -> None:
        writes = self._rollup_writes
        writes.new_round()
        rollups, self._rollups = self._rollups, {}
        used, self._last_used = self._last_used, {}
        for rid in {**rollups, **writes.unsure}:
            rollup = rollups.get(rid)
            had_turn, _ = await writes.send(rid, rollup)
            if not had_turn and rollup is not None:
                self._merge_back(rid, *rollup)  # newer counts wait their turn
        for key_id, when in used.items():
            if writes.store_down:
                break  # last_used_at is best effort: not worth a timeout per key
            with contextlib.suppress(Exception):
                await self._store.update("keys", key_id, {"last_used_at": when})

    async def _roll_up(self, rid: str, rollup: _Rollup, once: Once) -> None:
        fields, inc = rollup
        mark, fresh = marks(once)
        await self._store.increment(
            USAGE, rid, inc, set_on_insert=fields, set=mark, where=fresh, returning=False
        )

    def _merge_back(self, rid: str, fields: dict[str, Any], inc: dict[str, float]) -> None:
        current = self._rollups.setdefault(rid, (fields, {}))[1]
        for name, value in inc.items():
            current[name] = current.get(name, 0) + value

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._settings.log_flush_interval)
            try:
                await self.flush()
            except Exception as exc:
                log_failure(log, exc, "accounting flush failed")
