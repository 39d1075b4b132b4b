"""Window and budget-period arithmetic, computed in Python (not in the database).

Rate windows are fixed and aligned (each minute, each UTC day). Budget periods of 1d, 7d
and 30d repeat from the owner's creation time; ``monthly`` follows calendar months (UTC);
``total`` never resets.
"""

from __future__ import annotations

import functools
import math
from datetime import datetime, timedelta

_SPANS = {"1d": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}


def minute_window(now: datetime) -> tuple[datetime, datetime]:
    start = now.replace(second=0, microsecond=0)
    return start, start + timedelta(minutes=1)


def day_window(now: datetime) -> tuple[datetime, datetime]:
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1)


def budget_period(
    duration: str | None, anchor: datetime, now: datetime
) -> tuple[datetime, datetime | None]:
    """(start, end) of the budget period containing ``now``; end None means never."""
    if duration in (None, "total"):
        return anchor, None
    if duration == "monthly":
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (
            start.replace(year=start.year + 1, month=1)
            if start.month == 12
            else start.replace(month=start.month + 1)
        )
        return start, end
    span = _SPANS[duration]
    if now < anchor:
        return anchor, anchor + span
    periods = (now - anchor) // span
    start = anchor + periods * span
    return start, start + span


def seconds_until(now: datetime, end: datetime | None) -> int | None:
    if end is None:
        return None
    return max(1, math.ceil((end - now).total_seconds()))


@functools.lru_cache(maxsize=256)
def openai_duration(seconds: float) -> str:
    """OpenAI's reset format in x-ratelimit-reset-*: "1s", "6m0s", "1h2m3s"."""
    whole = max(0, math.ceil(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
