"""`conduit-tornado keys list` as an aligned table: what an operator checks a key for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from conduit_tornado.admission.periods import budget_period

COLUMNS = ("id", "prefix", "status", "spend", "budget", "expires", "name")


def status(key: dict[str, Any], now: datetime) -> str:
    """active, disabled or expired: what a request with the key meets now."""
    if not key.get("enabled", True):
        return "disabled"
    expires = _when(key.get("expires_at"))
    if expires is not None and expires <= now:
        return "expired"
    return "active"


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _money(value: Any) -> str:
    """Dollars to the cent, or to 1/100 of a cent when the cents hide something (a
    request costs fractions of a cent)."""
    if not isinstance(value, int | float):
        return "-"
    return f"${value:.2f}" if round(value, 2) == value else f"${value:.4f}"


def spend(key: dict[str, Any], now: datetime) -> float:
    """This budget period's spend. The key keeps the spend of the period it was last
    charged in; once a new period has begun (1d, 7d, 30d, monthly) nothing is spent yet."""
    value = key.get("spend")
    spent = float(value) if isinstance(value, int | float) else 0.0
    created, charged = _when(key.get("created_at")), _when(key.get("period_start"))
    if created is None or charged is None:
        return spent
    start, _ = budget_period(key.get("budget_duration"), created, now)
    # A second's slack: the API's times may be rounded, the period's start is computed.
    return 0.0 if charged < start - timedelta(seconds=1) else spent


def row(key: dict[str, Any], now: datetime) -> tuple[str, ...]:
    expires = _when(key.get("expires_at"))
    budget = key.get("max_budget")
    period = key.get("budget_duration") or "total"
    return (
        str(key.get("id", "")),
        str(key.get("prefix", "")),
        status(key, now),
        _money(spend(key, now)),
        f"{_money(budget)} {period}" if budget is not None else "none",
        expires.strftime("%Y-%m-%d %H:%M UTC") if expires is not None else "never",
        str(key.get("name", "")),
    )


def render(keys: list[dict[str, Any]], now: datetime | None = None) -> str:
    """The table, one line a key, columns padded to their widest cell (name last, as is)."""
    moment = now or datetime.now(UTC)
    rows = [COLUMNS, *(row(k, moment) for k in keys)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS) - 1)]
    lines = [
        "  ".join([*(cell.ljust(w) for cell, w in zip(r, widths, strict=False)), r[-1]])
        for r in rows
    ]
    return "\n".join(line.rstrip() for line in lines)
