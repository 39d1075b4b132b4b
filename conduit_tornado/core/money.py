"""Money in the admin API: spend sums of many per-request costs carry float noise
(0.1 + 0.2 = 0.30000000000000004); shown rounded to 1e-10 dollars, the precision each
request's cost is priced to (metering/pricing.py), so sums read as the prices do."""

from __future__ import annotations

from typing import Any

MONEY_DIGITS = 10


def money(value: Any) -> float:
    """A dollar amount as the admin API shows it (0.0 for none)."""
    return round(float(value or 0.0), MONEY_DIGITS)


def usage_numbers(row: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """A usage row as an API shows it: every one of ``fields`` present, counts as
    integers (stores may sum them as floats), ``cost`` as money. Changes ``row``."""
    for name in fields:
        value = row.get(name) or 0
        row[name] = money(value) if name == "cost" else round(value)
    return row
