"""Time in one place, so tests can move it instead of sleeping."""

from __future__ import annotations

import time
from datetime import UTC, datetime


class Clock:
    def now(self) -> datetime:
        # MongoDB keeps milliseconds; truncating here makes both stores agree exactly.
        # (From whole milliseconds: a third of the cost of now() and replace(), and the
        # float is within a microsecond of the millisecond, which fromtimestamp rounds to.)
        return datetime.fromtimestamp(time.time_ns() // 1_000_000 / 1000, UTC)

    def monotonic(self) -> float:
        return time.monotonic()
