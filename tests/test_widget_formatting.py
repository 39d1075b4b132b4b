"""The widgets' numbers, dates, limits and chart ticks read as the web UI writes them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from conduit_jupyter.formatting import (
    bar_chart,
    budget_text,
    limits_text,
    money,
    nice_ticks,
    parse_expiry,
    relative,
    time_text,
)

NOW = datetime(2026, 12, 6, 13, 0, tzinfo=UTC)


def test_money_counts_and_limits_in_words() -> None:
    assert money(41.3746) == "$41.37" and money(1234.5) == "$1,234.50"
    assert money(0.0042) == "$0.0042" and money(0) == "$0.00"
    assert limits_text({"rpm": 600, "tpm": 200_000}) == "600 req/min, 200k tok/min"
    assert limits_text({"rpd": 1_500_000, "max_parallel": 4}) == "1.5M req/day, 4 parallel"
    assert limits_text({}) == "No limits"


def test_budget_names_its_period_and_reset_date() -> None:
    key = {
        "spend": 41.3746,
        "max_budget": 50,
        "budget_duration": "monthly",
        "period_start": "2026-12-01T00:00:00Z",
    }
    assert budget_text(key) == "$41.37 of $50.00 monthly, resets Jan 1, 2027"
    weekly = {**key, "budget_duration": "7d", "period_start": "2026-12-03T10:00:00Z"}
    assert budget_text(weekly).endswith("weekly, resets Dec 10, 2026")
    assert budget_text({"spend": 2, "max_budget": None}) == "$2.00 spent, no budget"


def test_relative_times() -> None:
    assert relative(None) == "—"
    assert relative(NOW - timedelta(seconds=3), now=NOW) == "just now"
    assert relative(NOW - timedelta(minutes=3), now=NOW) == "3 minutes ago"
    assert relative(NOW + timedelta(days=30), now=NOW) == "in 30 days"
    assert relative("2026-12-06T12:00:00Z", now=NOW) == "1 hour ago"


def test_times_in_utc_with_seconds_like_the_web_ui() -> None:
    assert time_text(None) == "—"
    assert time_text("2026-12-06T17:35:04.25Z") == "Dec 6, 2026, 17:35:04 UTC"
    # Whatever zone the value is written in, it is shown in UTC.
    assert time_text("2026-12-07T01:35:04+08:00") == "Dec 6, 2026, 17:35:04 UTC"


def test_expiry_as_a_duration_or_a_date() -> None:
    assert parse_expiry("", now=NOW) is None
    assert parse_expiry("30d", now=NOW) == (NOW + timedelta(days=30)).isoformat()
    assert parse_expiry("12h", now=NOW) == (NOW + timedelta(hours=12)).isoformat()
    assert parse_expiry("2027-01-31", now=NOW) == "2027-02-01T00:00:00+00:00"  # end of that day
    for bad, words in (("soon", "such as 30d"), ("2020-01-01", "in the past")):
        with pytest.raises(ValueError, match=words):
            parse_expiry(bad, now=NOW)


@pytest.mark.parametrize(
    ("top", "ticks"),
    [
        (7.3872, [0, 2, 4, 6, 8]),
        (0.0123, [0, 0.005, 0.01, 0.015]),
        (100, [0, 20, 40, 60, 80, 100]),
        (0, [0, 1]),
    ],
)
def test_round_ticks(top: float, ticks: list[float]) -> None:
    assert nice_ticks(top) == ticks


def test_chart_has_round_ticks_axis_titles_and_theme_classes() -> None:
    days = ["2026-12-05", "2026-12-06"]
    svg = bar_chart(days, {"gpt": [1.8468, 3.6936], "claude": [0, 1]}, "USD", "Spend")
    labels = re.findall(r'text-anchor="end" fill="#57606a">([^<]+)<', svg)
    assert labels == ["$0", "$1", "$2", "$3", "$4", "$5"]
    assert "Spend (USD) per day" in svg and "Day (UTC)" in svg
    assert 'class="s1"' in svg and 'class="s2"' in svg  # colours from the theme's variables
    assert "$4.69" in svg  # the day's total is written over its bar, not only on hover
