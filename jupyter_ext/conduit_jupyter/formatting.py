"""Numbers, money, dates, limits and charts, written the way the web UI writes them.

The gateway's web UI (``conduit_tornado/ui``, issue 20) formats in the browser; these are the
same rules in Python so that a widget and a UI page side by side read as one product:
"600 req/min, 200k tok/min", "$41.37 of $50.00 monthly, resets Jan 1, 2027", "3 minutes ago".
Colours are CSS variables with a light and a dark value (the UI's palette), switched by
JupyterLab's ``data-jp-theme-light`` attribute.
"""

from __future__ import annotations

import html
import math
import re
from datetime import UTC, date, datetime, timedelta

from conduit_tornado.ui.theme import DARK, LIGHT

PERIODS = {
    "1d": "daily",
    "7d": "weekly",
    "30d": "per 30 days",
    "monthly": "monthly",
    "total": "in total",
}
DURATIONS = [
    ("Never (lifetime)", "total"),
    ("Daily", "1d"),
    ("Weekly", "7d"),
    ("Every 30 days", "30d"),
    ("Monthly (calendar)", "monthly"),
]

# The web UI's palette, light then dark: one product, one set of colours.
_LIGHT, _DARK = LIGHT, DARK
SERIES = 7


def _vars(tokens: dict[str, str]) -> str:
    return "".join(f"--cd-{name}:{value};" for name, value in tokens.items())


CSS = (
    "<style>"
    f".conduit{{{_vars(_LIGHT)}color:var(--cd-text);font-variant-numeric:tabular-nums}}"
    f'body[data-jp-theme-light="false"] .conduit{{{_vars(_DARK)}}}'
    ".conduit .cd-grid{border:1px solid var(--cd-border);border-radius:8px;overflow-x:auto;"
    "background:var(--cd-surface)}"
    ".conduit .cd-cell{padding:6px 8px;border-bottom:1px solid var(--cd-border);min-width:0;"
    "align-self:stretch;margin:0}"
    ".conduit .cd-cell .widget-html-content{line-height:1.35;white-space:normal;"
    "overflow-wrap:anywhere}"
    ".conduit .cd-th{background:var(--cd-surface-2);border-bottom:1px solid var(--cd-border);"
    "margin:0;height:auto;min-height:30px;padding:4px 8px;text-align:left;font-weight:600;"
    "font-size:12px;color:var(--cd-muted);border-radius:0;box-shadow:none;width:auto}"
    ".conduit .cd-th:hover{color:var(--cd-text)}"
    ".conduit .cd-th:disabled{opacity:1;cursor:default;color:var(--cd-muted)}"
    ".conduit .cd-secret button{font:inherit;font-size:12px;padding:2px 10px;border-radius:6px;"
    "border:1px solid var(--cd-border);background:var(--cd-surface);color:var(--cd-text);"
    "cursor:pointer}"
    ".conduit .cd-actions{align-content:start}"
    ".conduit .cd-actions button{width:auto;padding:0 8px;margin:0;height:26px;font-size:12.5px}"
    ".conduit .cd-sub{color:var(--cd-muted);font-size:12px}"
    ".conduit .cd-mono{font-family:var(--jp-code-font-family,monospace);font-size:12px}"
    ".conduit .cd-badge{display:inline-block;padding:0 8px;border-radius:999px;font-size:12px;"
    "font-weight:600;white-space:nowrap}"
    ".conduit .cd-badge.ok{color:var(--cd-ok);background:var(--cd-ok-soft)}"
    ".conduit .cd-badge.warn{color:var(--cd-warn);background:var(--cd-warn-soft)}"
    ".conduit .cd-badge.bad{color:var(--cd-bad);background:var(--cd-bad-soft)}"
    ".conduit .cd-badge.neutral{color:var(--cd-muted);background:var(--cd-surface-2);"
    "border:1px solid var(--cd-border)}"
    ".conduit .cd-bar{height:6px;background:var(--cd-surface-2);border:1px solid var(--cd-border);"
    "border-radius:3px;overflow:hidden;width:140px;margin-top:3px}"
    ".conduit .cd-bar>span{display:block;height:100%;background:var(--cd-accent)}"
    ".conduit .cd-bar.warn>span{background:var(--cd-warn)}"
    ".conduit .cd-bar.bad>span{background:var(--cd-bad)}"
    ".conduit .cd-empty{padding:24px;text-align:center;color:var(--cd-muted)}"
    ".conduit .cd-empty b{display:block;color:var(--cd-text);margin-bottom:4px}"
    ".conduit .conduit-error{color:var(--cd-bad);background:var(--cd-bad-soft);padding:6px 10px;"
    "border-radius:6px;margin:4px 0}"
    ".conduit .conduit-ok{color:var(--cd-ok);background:var(--cd-ok-soft);padding:6px 10px;"
    "border-radius:6px;margin:4px 0}"
    ".conduit .cd-secret{border:1px solid var(--cd-ok);padding:8px 10px;border-radius:6px;"
    "background:var(--cd-ok-soft);margin:6px 0}"
    ".conduit .cd-help{color:var(--cd-muted);font-size:12px;margin:-2px 0 6px 150px}"
    ".conduit .cd-help .widget-html-content{line-height:1.3;white-space:normal}"
    ".conduit h3{margin:8px 0}"
    ".conduit .cd-chart svg{max-width:100%;height:auto;display:block}"
    ".conduit .cd-chart text{fill:var(--cd-muted);font:11px var(--jp-ui-font-family,sans-serif)}"
    ".conduit .cd-chart text.cd-title{font-weight:600;font-size:11.5px}"
    ".conduit .cd-chart text.cd-value{fill:var(--cd-text)}"
    ".conduit .cd-chart line.cd-gridline{stroke:var(--cd-border)}"
    ".conduit .cd-chart line.cd-axis{stroke:var(--cd-muted)}"
    + "".join(
        f".conduit .s{i}{{fill:var(--cd-c{i});background:var(--cd-c{i})}}"
        for i in range(1, SERIES + 1)
    )
    + ".conduit .cd-legend{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:12.5px}"
    ".conduit .cd-legend i{display:inline-block;width:10px;height:10px;border-radius:2px;"
    "margin-right:6px;vertical-align:-1px}"
    ".conduit .cd-answer{white-space:pre-wrap;border:1px solid var(--cd-border);padding:8px 10px;"
    "border-radius:6px;background:var(--cd-surface-2);min-height:2em}"
    "</style>"
)


def money(value: float | None) -> str:
    """$0.0042 below a cent (so small spend is not shown as $0.00), else $1,234.57."""
    v = float(value or 0)
    if v != 0 and abs(v) < 0.01:
        text = f"{abs(v):.4f}".rstrip("0")
        return f"{'-' if v < 0 else ''}${text}"
    return f"{'-' if v < 0 else ''}${abs(v):,.2f}"


def count(value: float | None) -> str:
    return f"{float(value or 0):,.0f}"


def short(value: float) -> str:
    """200k, 1.5M: compact counts, one decimal at most."""
    v = float(value)
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= size:
            return f"{v / size:.1f}".rstrip("0").rstrip(".") + suffix
    return f"{v:,.0f}"


def limits_text(item: dict[str, object]) -> str:
    parts = []
    for field, unit, compact in (
        ("rpm", "req/min", True),
        ("rpd", "req/day", True),
        ("tpm", "tok/min", True),
        ("max_parallel", "parallel", False),
        ("max_realtime_sessions", "realtime", False),
    ):
        value = item.get(field)
        if isinstance(value, int | float) and value:
            parts.append(f"{short(value) if compact else count(value)} {unit}")
    return ", ".join(parts) if parts else "No limits"


def parse_time(value: object) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def day_text(moment: date | datetime) -> str:
    """ "Dec 6, 2026" (the UI's medium date)."""
    return f"{moment.strftime('%b')} {moment.day}, {moment.year}"


def time_text(value: object) -> str:
    """ "Dec 6, 2026, 17:35:04 UTC": the web UI's one way of writing an instant (UTC, with
    seconds, the zone said), so a widget and a page agree with each other, the usage days
    (UTC) and the gateway's log lines whatever zone the kernel or browser is in."""
    moment = parse_time(value)
    if moment is None:
        return "—"
    utc = moment.astimezone(UTC)
    return f"{day_text(utc)}, {utc.strftime('%H:%M:%S')} UTC"


def relative(value: object, now: datetime | None = None) -> str:
    """ "just now", "3 minutes ago", "in 30 days"; "—" for none."""
    moment = parse_time(value)
    if moment is None:
        return "—"
    seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    span = abs(seconds)
    if span < 10:
        return "just now"
    unit, divisor = next(
        (name, size)
        for limit, name, size in (
            (60, "second", 1.0),
            (3600, "minute", 60.0),
            (86400, "hour", 3600.0),
            (86400 * 45, "day", 86400.0),
            (86400 * 400, "month", 86400 * 30.4),
            (math.inf, "year", 86400 * 365.0),
        )
        if span < limit - size / 2  # 59.6 minutes reads "1 hour", not "60 minutes"
    )
    amount = round(span / divisor)
    words = f"{amount} {unit}{'' if amount == 1 else 's'}"
    return f"in {words}" if seconds > 0 else f"{words} ago"


def period_end(duration: object, period_start: object) -> datetime | None:
    start = parse_time(period_start)
    if start is None or duration in (None, "total"):
        return None
    if duration == "monthly":
        year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
        return datetime(year, month, 1, tzinfo=UTC)
    days = {"1d": 1, "7d": 7, "30d": 30}.get(str(duration))
    return start + timedelta(days=days) if days else None


def budget_text(item: dict[str, object]) -> str:
    spend = item.get("spend")
    spent = money(spend if isinstance(spend, int | float) else 0)
    budget = item.get("max_budget")
    if not isinstance(budget, int | float):
        return f"{spent} spent, no budget"
    end = period_end(item.get("budget_duration"), item.get("period_start"))
    period = PERIODS.get(str(item.get("budget_duration")), "in total")
    return f"{spent} of {money(budget)} {period}" + (f", resets {day_text(end)}" if end else "")


_DURATION = re.compile(r"^(\d+)\s*([mhdw])$")


def parse_expiry(text: str, now: datetime | None = None) -> str | None:
    """ "30d", "12h", "2w", "90m", a date (2027-01-31: the end of that day, UTC) or an ISO
    date-time; empty is never. Raises ValueError with an example."""
    value = text.strip().lower()
    if not value:
        return None
    now = now or datetime.now(UTC)
    found = _DURATION.match(value)
    if found:
        amount, unit = int(found.group(1)), found.group(2)
        if amount < 1:
            raise ValueError("must be a positive duration such as 30d")
        delta = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}
        return (now + delta.get(unit, timedelta(weeks=1)) * amount).isoformat()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            day = date.fromisoformat(value)
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
        else:
            moment = parse_time(text.strip()) or now
    except ValueError:
        raise ValueError(
            "must be a duration such as 30d, 12h or 2w, or a date such as 2027-01-31"
        ) from None
    if moment <= now:
        raise ValueError("is in the past: give a future date or a duration such as 30d")
    return moment.isoformat()


def nice_ticks(top: float, target: int = 5) -> list[float]:
    """Round ticks from 0 covering `top`: steps of 1, 2 or 5 times a power of ten."""
    if not top > 0:
        return [0.0, 1.0]
    raw = top / target
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw * (1 - 1e-9))
    ticks = [0.0]
    while ticks[-1] < top * (1 - 1e-9):
        ticks.append(float(f"{ticks[-1] + step:.12g}"))
    return ticks


def tick_text(value: float, unit: str, step: float) -> str:
    if unit == "USD":
        if step >= 1:
            return f"${value:,.0f}"
        decimals = max(2, -math.floor(math.log10(step)) if step > 0 else 2)
        return f"${value:,.{decimals}f}"
    return short(value) if value >= 10_000 else count(value)


def value_text(value: float, unit: str) -> str:
    return money(value) if unit == "USD" else short(value) if value >= 10_000 else count(value)


def bar_chart(days: list[str], series: dict[str, list[float]], unit: str, title: str) -> str:
    """A stacked bar chart as inline SVG: one bar a day, round ticks, axis titles with units,
    the total over each bar when there is room; colours follow the notebook's theme."""
    width, height, left, right, top, bottom = 760, 260, 72, 12, 22, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(values[i] for values in series.values()) for i in range(len(days))]
    ticks = nice_ticks(max(totals, default=0.0))
    y_max = ticks[-1]
    step = ticks[1] - ticks[0]

    def y(v: float) -> float:
        return top + plot_h - v / y_max * plot_h

    slot = plot_w / max(1, len(days))
    bar_w = max(2.0, min(36.0, slot * 0.7))
    every = math.ceil(len(days) / max(1, plot_w // 64))
    out = [
        f'<svg viewBox="0 0 {width} {height}" width="{width}" role="img" '
        f'aria-label="{html.escape(title)}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for t in ticks:
        out.append(
            f'<line class="cd-gridline" x1="{left}" x2="{width - right}" y1="{y(t):.1f}" '
            f'y2="{y(t):.1f}" stroke="#d9dde3"/><text x="{left - 8}" y="{y(t) + 4:.1f}" '
            f'text-anchor="end" fill="#57606a">{tick_text(t, unit, step)}</text>'
        )
    for i, day in enumerate(days):
        base = 0.0
        x = left + slot * i + (slot - bar_w) / 2
        for n, (name, values) in enumerate(series.items()):
            v = values[i]
            if v <= 0:
                continue
            cls = f"s{n % SERIES + 1}"
            out.append(
                f'<rect class="{cls}" x="{x:.1f}" y="{y(base + v):.1f}" width="{bar_w:.1f}" '
                f'height="{max(0.5, y(base) - y(base + v)):.1f}" fill="{_LIGHT["c" + cls[1:]]}">'
                f"<title>{html.escape(day_text(date.fromisoformat(day)))} · "
                f"{html.escape(name)}: {value_text(v, unit)}</title></rect>"
            )
            base += v
        if base > 0 and len(days) <= 14:
            out.append(
                f'<text class="cd-value" x="{x + bar_w / 2:.1f}" y="{y(base) - 4:.1f}" '
                f'text-anchor="middle" fill="#1b1f24">{value_text(base, unit)}</text>'
            )
        if i % every == 0:
            label = date.fromisoformat(day)
            out.append(
                f'<text x="{left + slot * i + slot / 2:.1f}" y="{height - bottom + 16}" '
                f'text-anchor="middle" fill="#57606a">{label.strftime("%b")} {label.day}</text>'
            )
    y_title = {"USD": "Spend (USD)", "tokens": "Tokens", "requests": "Requests"}.get(unit, unit)
    middle = top + plot_h / 2
    out.append(
        f'<line class="cd-axis" x1="{left}" x2="{width - right}" y1="{y(0):.1f}" '
        f'y2="{y(0):.1f}" stroke="#57606a"/>'
        f'<text class="cd-title" x="14" y="{middle:.1f}" transform="rotate(-90 14 {middle:.1f})" '
        f'text-anchor="middle" fill="#57606a">{y_title} per day</text>'
        f'<text class="cd-title" x="{left + plot_w / 2:.1f}" y="{height - 6}" '
        f'text-anchor="middle" fill="#57606a">Day (UTC)</text></svg>'
    )
    legend = "".join(
        f'<span><i class="s{n % SERIES + 1}"></i>{html.escape(name)}</span>'
        for n, name in enumerate(series)
    )
    return f'<div class="cd-chart">{"".join(out)}<div class="cd-legend">{legend}</div></div>'
