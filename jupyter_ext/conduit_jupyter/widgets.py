"""ipywidgets for a conduit gateway: KeyManager, UsageDashboard, Playground.

Each works against any gateway (started in the kernel, mounted in Jupyter, or standalone):
give it ``gateway=`` (what ``conduit_tornado.start`` returns) or ``url=`` and
``master_key=``. Actions are async methods (awaitable from code and tests); buttons
schedule them on the running loop. API errors show inline, never as a traceback.
"""

from __future__ import annotations

import asyncio
import html
import json
import time
from collections.abc import Coroutine
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx2
import ipywidgets as w

from conduit_tornado import AdminClient, AdminError, RunningGateway

LIMIT_FIELDS = ("rpm", "rpd", "tpm", "max_parallel")
PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#EECA3B", "#B279A2", "#9D755D"]


class _Panel(w.VBox):
    """An async-driven widget: tracks its tasks and shows errors in place."""

    def __init__(
        self,
        gateway: RunningGateway | None = None,
        *,
        url: str | None = None,
        master_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if gateway is not None:
            self._admin, self._url = gateway.admin, gateway.url
        elif url and master_key:
            self._admin, self._url = AdminClient(url, master_key), url.rstrip("/")
        else:
            raise ValueError("give gateway=, or url= and master_key=")
        self._tasks: set[asyncio.Task[None]] = set()
        self.status = w.HTML()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(self._guard(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guard(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except AdminError as exc:
            self.show_error(exc.message)
        except Exception as exc:  # the widget reports; the notebook does not crash
            self.show_error(f"{type(exc).__name__}: {exc}")

    def show_error(self, message: str) -> None:
        self.status.value = f'<div style="color:#b00020">⚠ {html.escape(message)}</div>'

    def show_ok(self, message: str) -> None:
        self.status.value = f'<div style="color:#2e7d32">{html.escape(message)}</div>'

    async def settle(self) -> None:
        """Wait for every action started by a click (tests, or code after a click)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks))


def _int(field: w.Text) -> int | None:
    value = field.value.strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{field.description.rstrip(':')} must be a positive whole number")
    return int(value)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _spend_bar(spend: float, budget: float | None) -> str:
    if not budget:
        return f"${spend:.4f}"
    share = min(1.0, spend / budget) if budget else 0.0
    color = "#2e7d32" if share < 0.8 else "#f9a825" if share < 1 else "#c62828"
    return (
        f'<div title="${spend:.4f} of ${budget:.2f}" style="width:110px;background:#eee;height:10px;'
        f'border-radius:5px"><div style="width:{share * 100:.0f}%;background:{color};height:10px;'
        f'border-radius:5px"></div></div><small>${spend:.4f} / ${budget:.2f}</small>'
    )


class KeyManager(_Panel):
    """A table of virtual keys with create, edit, enable/disable, rotate and delete."""

    def __init__(self, gateway: RunningGateway | None = None, **kwargs: Any) -> None:
        super().__init__(gateway, **kwargs)
        self.rows = w.VBox()
        self.secret = w.HTML()
        self.editing: str | None = None
        self._confirm: str | None = None
        style = {"description_width": "110px"}
        self.name = w.Text(description="Name:", style=style)
        self.models = w.Text(
            description="Models:", placeholder="gpt-*, claude (empty: all)", style=style
        )
        self.ips = w.Text(
            description="Allowed IPs:", placeholder="10.0.0.0/8, 127.0.0.1", style=style
        )
        self.limits = {
            name: w.Text(description=f"{name}:", placeholder="none", style=style)
            for name in LIMIT_FIELDS
        }
        self.max_budget = w.Text(description="Budget $:", placeholder="none", style=style)
        self.budget_duration = w.Dropdown(
            description="Period:", options=["total", "1d", "7d", "30d", "monthly"], style=style
        )
        self.expires = w.Text(
            description="Expires:", placeholder="2026-12-31T00:00:00Z", style=style
        )
        self.group = w.Text(description="Group:", style=style)
        self.metadata = w.Textarea(
            description="Metadata:", placeholder='{"team": "search"}', style=style
        )
        self.create_button = w.Button(description="Create key", button_style="primary", icon="plus")
        self.save_button = w.Button(
            description="Save changes", button_style="success", disabled=True
        )
        self.cancel_button = w.Button(description="Cancel edit", disabled=True)
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.create_button.on_click(lambda _: self._spawn(self.create()))
        self.save_button.on_click(lambda _: self._spawn(self.save()))
        self.cancel_button.on_click(lambda _: self._clear_form())
        self.refresh_button.on_click(lambda _: self._spawn(self.refresh()))
        form = w.VBox(
            [
                w.HBox([self.name, self.models]),
                w.HBox([self.ips, self.group]),
                w.HBox(list(self.limits.values())[:2]),
                w.HBox(list(self.limits.values())[2:]),
                w.HBox([self.max_budget, self.budget_duration]),
                w.HBox([self.expires]),
                self.metadata,
                w.HBox(
                    [self.create_button, self.save_button, self.cancel_button, self.refresh_button]
                ),
            ]
        )
        self.children = [
            w.HTML("<h3>Virtual keys</h3>"),
            self.rows,
            self.secret,
            self.status,
            w.HTML("<h4>Create or edit</h4>"),
            form,
        ]
        self.data: list[dict[str, Any]] = []

    # -- reading -----------------------------------------------------------------------

    async def refresh(self) -> None:
        page = await self._admin.list_keys(limit=1000)
        self.data = page["data"]
        self.rows.children = [self._header()] + [self._row(k) for k in self.data]

    def _header(self) -> w.HTML:
        cols = ["name / prefix", "enabled", "models", "limits", "spend", "expires", "last used"]
        cells = "".join(f'<th style="text-align:left;padding:2px 8px">{c}</th>' for c in cols)
        return w.HTML(f"<table><tr>{cells}</tr></table>")

    def _row(self, key: dict[str, Any]) -> w.HBox:
        limits = ", ".join(f"{n} {key[n]}" for n in LIMIT_FIELDS if key.get(n)) or "none"
        cells = [
            f"<b>{html.escape(key['name'])}</b><br><code>{html.escape(key['prefix'])}…</code>",
            "✅" if key["enabled"] else "⛔",
            html.escape(", ".join(key.get("allowed_models") or []) or "all"),
            html.escape(limits),
            _spend_bar(float(key.get("spend") or 0), key.get("max_budget")),
            html.escape(str(key.get("expires_at") or "never"))[:19],
            html.escape(str(key.get("last_used_at") or "never"))[:19],
        ]
        table = "".join(f'<td style="padding:2px 8px;vertical-align:top">{c}</td>' for c in cells)
        kid = key["id"]
        toggle = w.Button(
            description="Disable" if key["enabled"] else "Enable", layout=w.Layout(width="80px")
        )
        rotate = w.Button(description="Rotate", layout=w.Layout(width="70px"))
        edit = w.Button(description="Edit", layout=w.Layout(width="60px"))
        delete = w.Button(
            description="Confirm?" if self._confirm == kid else "Delete",
            button_style="danger",
            layout=w.Layout(width="80px"),
        )
        toggle.on_click(lambda _: self._spawn(self.toggle(kid)))
        rotate.on_click(lambda _: self._spawn(self.rotate(kid)))
        edit.on_click(lambda _: self.edit(kid))
        delete.on_click(lambda _: self._spawn(self.delete(kid)))
        row = w.HBox([w.HTML(f"<table><tr>{table}</tr></table>"), toggle, rotate, edit, delete])
        row.key_id = kid
        return row

    def row_buttons(self, key_id: str) -> dict[str, w.Button]:
        """The action buttons of one key's row, by label (for code and tests)."""
        for row in self.rows.children[1:]:
            if getattr(row, "key_id", None) == key_id:
                return {b.description: b for b in row.children[1:]}
        raise KeyError(key_id)

    # -- writing -----------------------------------------------------------------------

    def _fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "name": self.name.value.strip(),
            "allowed_models": _split(self.models.value),
            "allowed_ips": _split(self.ips.value),
            "group": self.group.value.strip() or None,
            "expires_at": self.expires.value.strip() or None,
        }
        for name, field in self.limits.items():
            fields[name] = _int(field)
        budget = self.max_budget.value.strip()
        fields["max_budget"] = float(budget) if budget else None
        fields["budget_duration"] = self.budget_duration.value if budget else None
        meta = self.metadata.value.strip()
        fields["metadata"] = json.loads(meta) if meta else {}
        if not isinstance(fields["metadata"], dict):
            raise ValueError("metadata must be a JSON object")
        return fields

    async def create(self) -> None:
        self.secret.value = ""
        fields = {k: v for k, v in self._fields().items() if v not in (None, [], {})}
        created = await self._admin.create_key(**fields)
        self._show_secret(created["name"], created["key"])
        self._clear_form()
        await self.refresh()

    def _show_secret(self, name: str, secret: str) -> None:
        """The key, once: with a copy button; it is gone at the next action."""
        value = html.escape(secret)
        self.secret.value = (
            f'<div style="border:1px solid #2e7d32;padding:8px;border-radius:4px">'
            f"New key for <b>{html.escape(name)}</b> (shown once; store it now):<br>"
            f'<code style="user-select:all">{value}</code> '
            f"<button onclick=\"navigator.clipboard.writeText('{value}')\">Copy</button></div>"
        )
        self.last_secret = secret

    def edit(self, key_id: str) -> None:
        key = next(k for k in self.data if k["id"] == key_id)
        self.editing = key_id
        self.name.value = key["name"]
        self.models.value = ", ".join(key.get("allowed_models") or [])
        self.ips.value = ", ".join(key.get("allowed_ips") or [])
        self.group.value = key.get("group") or ""
        self.expires.value = str(key.get("expires_at") or "")
        for name, field in self.limits.items():
            field.value = str(key.get(name) or "")
        self.max_budget.value = "" if key.get("max_budget") is None else str(key["max_budget"])
        self.budget_duration.value = key.get("budget_duration") or "total"
        self.metadata.value = json.dumps(key.get("metadata") or {})
        self.save_button.disabled = self.cancel_button.disabled = False
        self.create_button.disabled = True

    async def save(self) -> None:
        if self.editing is None:
            return
        await self._admin.update_key(self.editing, **self._fields())
        self.show_ok("Saved.")
        self._clear_form()
        await self.refresh()

    def _clear_form(self) -> None:
        self.editing = None
        for field in (
            self.name,
            self.models,
            self.ips,
            self.group,
            self.expires,
            self.max_budget,
            self.metadata,
            *self.limits.values(),
        ):
            field.value = ""
        self.save_button.disabled = self.cancel_button.disabled = True
        self.create_button.disabled = False

    async def toggle(self, key_id: str) -> None:
        key = next(k for k in self.data if k["id"] == key_id)
        await self._admin.update_key(key_id, enabled=not key["enabled"])
        self.secret.value = ""
        await self.refresh()

    async def rotate(self, key_id: str) -> None:
        rotated = await self._admin.rotate_key(key_id)
        self._show_secret(rotated["name"], rotated["key"])
        await self.refresh()

    async def delete(self, key_id: str) -> None:
        """First click asks to confirm; the second deletes."""
        if self._confirm != key_id:
            self._confirm = key_id
            await self.refresh()
            return
        self._confirm = None
        await self._admin.delete_key(key_id)
        self.secret.value = ""
        self.show_ok("Deleted.")
        await self.refresh()


def bar_chart(days: list[str], series: dict[str, list[float]], unit: str) -> str:
    """A stacked bar chart as inline SVG: one bar a day, one color a series."""
    width, height, left, bottom = 640, 220, 56, 28
    totals = [sum(values[i] for values in series.values()) for i in range(len(days))]
    top = max(totals, default=0) or 1.0
    step = (width - left) / max(1, len(days))
    parts = [f'<svg width="{width}" height="{height + 30}" style="font:11px sans-serif">']
    for tick in range(5):
        value = top * tick / 4
        y = height - bottom - (height - bottom - 10) * tick / 4
        label = f"${value:.4f}" if unit == "USD" else f"{value:,.0f}"
        parts.append(
            f'<line x1="{left}" x2="{width}" y1="{y}" y2="{y}" stroke="#eee"/>'
            f'<text x="{left - 4}" y="{y + 4}" text-anchor="end">{label}</text>'
        )
    for i, day in enumerate(days):
        y = float(height - bottom)
        for n, (name, values) in enumerate(series.items()):
            h = (height - bottom - 10) * values[i] / top
            if h > 0:
                y -= h
                parts.append(
                    f'<rect x="{left + i * step + 2:.1f}" y="{y:.1f}" width="{max(1.0, step - 4):.1f}" '
                    f'height="{h:.1f}" fill="{PALETTE[n % len(PALETTE)]}"><title>{html.escape(name)} '
                    f"{day}: {values[i]:,.6g} {unit}</title></rect>"
                )
        if len(days) <= 14 or i % max(1, len(days) // 10) == 0:
            parts.append(
                f'<text x="{left + i * step + step / 2:.1f}" y="{height - 10}" '
                f'text-anchor="middle">{day[5:]}</text>'
            )
    x = left
    for n, name in enumerate(series):
        parts.append(
            f'<rect x="{x}" y="{height + 8}" width="10" height="10" fill="{PALETTE[n % len(PALETTE)]}"/>'
            f'<text x="{x + 14}" y="{height + 17}">{html.escape(name[:24])}</text>'
        )
        x += 20 + 7 * min(24, len(name))
    parts.append("</svg>")
    return "".join(parts)


class UsageDashboard(_Panel):
    """Spend, tokens or requests per day, stacked by model or key, over a chosen range."""

    METRICS = {
        "Spend (USD)": ("cost", "USD"),
        "Tokens": ("total_tokens", "tokens"),
        "Requests": ("requests", "requests"),
    }

    def __init__(
        self, gateway: RunningGateway | None = None, *, today: date | None = None, **kwargs: Any
    ) -> None:
        super().__init__(gateway, **kwargs)
        self._today = today
        self.range = w.Dropdown(
            description="Range:", options=[("7 days", 7), ("30 days", 30), ("90 days", 90)], value=7
        )
        self.metric = w.Dropdown(
            description="Show:", options=list(self.METRICS), value="Spend (USD)"
        )
        self.by = w.Dropdown(
            description="By:", options=[("model", "model"), ("key", "key_id")], value="model"
        )
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.chart = w.HTML()
        self.summary = w.HTML()
        for control in (self.range, self.metric, self.by):
            control.observe(lambda _: self._spawn(self.refresh()), names="value")
        self.refresh_button.on_click(lambda _: self._spawn(self.refresh()))
        self.children = [
            w.HTML("<h3>Usage</h3>"),
            w.HBox([self.range, self.metric, self.by, self.refresh_button]),
            self.chart,
            self.summary,
            self.status,
        ]
        self.series: dict[str, list[float]] = {}
        self.days: list[str] = []

    async def refresh(self) -> None:
        end = self._today or datetime.now(UTC).date()
        start = end - timedelta(days=int(self.range.value) - 1)
        self.days = [(start + timedelta(days=i)).isoformat() for i in range(int(self.range.value))]
        field, unit = self.METRICS[self.metric.value]
        rows: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = await self._admin.usage(
                start=start.isoformat(), end=end.isoformat(), offset=offset, limit=1000
            )
            rows.extend(page["data"])
            offset += len(page["data"])
            if offset >= page["total"] or not page["data"]:
                break
        names = await self._key_names() if self.by.value == "key_id" else {}
        series: dict[str, list[float]] = {}
        index = {d: i for i, d in enumerate(self.days)}
        for row in rows:
            label = names.get(row[self.by.value], row[self.by.value]) or "(none)"
            values = series.setdefault(label, [0.0] * len(self.days))
            if row["day"] in index:
                values[index[row["day"]]] += float(row.get(field) or 0)
        self.series = dict(sorted(series.items(), key=lambda kv: -sum(kv[1])))
        totals = page.get("totals") or {}
        self.chart.value = (
            bar_chart(self.days, self.series, unit)
            if self.series
            else "<i>No usage in this range yet.</i>"
        )
        self.summary.value = (
            f"<b>{totals.get('requests', 0):,.0f}</b> requests · <b>{totals.get('total_tokens', 0):,.0f}</b> tokens · "
            f"<b>${totals.get('cost', 0):.4f}</b> · {totals.get('unpriced_requests', 0):,.0f} unpriced"
        )

    async def _key_names(self) -> dict[str, str]:
        return {k["id"]: k["name"] for k in (await self._admin.list_keys(limit=1000))["data"]}


class Playground(_Panel):
    """Pick a key and a model, send a message, watch the answer stream in."""

    def __init__(self, gateway: RunningGateway | None = None, **kwargs: Any) -> None:
        super().__init__(gateway, **kwargs)
        self.key = w.Password(description="Key:", placeholder="condt_…")
        self.temp_key_button = w.Button(description="Use a temporary key")
        self.model = w.Dropdown(description="Model:", options=[])
        self.prompt = w.Textarea(
            description="Message:", placeholder="Ask something", layout=w.Layout(width="90%")
        )
        self.send_button = w.Button(description="Send", button_style="primary", icon="paper-plane")
        self.output = w.HTML()
        self.stats = w.HTML()
        self.temp_key_button.on_click(lambda _: self._spawn(self.temporary_key()))
        self.send_button.on_click(lambda _: self._spawn(self.send()))
        self.children = [
            w.HTML("<h3>Playground</h3>"),
            w.HBox([self.key, self.temp_key_button]),
            self.model,
            self.prompt,
            self.send_button,
            self.output,
            self.stats,
            self.status,
        ]
        self.text = ""

    async def refresh(self) -> None:
        models = await self._admin.list_models()
        self.model.options = [m["name"] for m in models["data"]]

    async def temporary_key(self) -> None:
        created = await self._admin.create_key(
            name="playground", metadata={"created_by": "Playground widget"}
        )
        self.key.value = created["key"]

    async def send(self) -> None:
        if not self.key.value or not self.model.value or not self.prompt.value.strip():
            self.show_error("Choose a key and a model, and write a message.")
            return
        self.text, self.status.value, self.stats.value = "", "", ""
        body = {
            "model": self.model.value,
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": self.prompt.value}],
        }
        started = time.perf_counter()
        first: float | None = None
        usage: dict[str, Any] = {}
        async with (
            httpx2.AsyncClient(timeout=120) as http,
            http.stream(
                "POST",
                self._url + "/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {self.key.value}"},
            ) as response,
        ):
            if response.status_code != 200:
                error = json.loads(await response.aread()).get("error", {})
                self.show_error(error.get("message", f"HTTP {response.status_code}"))
                return
            request_id = response.headers.get("x-request-id")
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    self.show_error(chunk["error"].get("message", "stream error"))
                    return
                for choice in chunk.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content") or ""
                    if piece and first is None:
                        first = time.perf_counter() - started
                    self.text += piece
                usage = chunk.get("usage") or usage
                self.output.value = (
                    f'<div style="white-space:pre-wrap">{html.escape(self.text)}</div>'
                )
        elapsed = time.perf_counter() - started
        cost = await self._cost(request_id)
        self.stats.value = (
            f"<small>{elapsed * 1000:.0f} ms total · first token {(first or elapsed) * 1000:.0f} ms · "
            f"{usage.get('prompt_tokens', 0)} + {usage.get('completion_tokens', 0)} tokens · "
            f"{'unpriced' if cost is None else f'${cost:.6f}'}</small>"
        )

    async def _cost(self, request_id: str | None) -> float | None:
        if not request_id:
            return None
        logs = await self._admin.logs(request_id=request_id, limit=1)
        return logs["data"][0].get("cost") if logs["data"] else None
