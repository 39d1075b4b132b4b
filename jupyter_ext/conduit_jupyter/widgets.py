"""ipywidgets for a conduit gateway: KeyManager, UsageDashboard, Playground, and MyUsage
(a JupyterHub user's own key and usage, with no master key).

Each works against any gateway (started in the kernel, mounted in Jupyter, or standalone):
give it ``gateway=`` (what ``conduit_tornado.start`` returns) or ``url=`` and
``master_key=``. Actions are async methods (awaitable from code and tests, from any loop);
buttons start them on the loop that owns the widget's HTTP client, whichever thread the
click arrives on (JupyterLab >= 4.4 may deliver it on a kernel subshell). That loop is the
kernel's, so a click made while a cell runs waits for the cell. Errors show inline as
sentences; from code they raise ``AdminError`` (the gateway's answer, or that it could not be
reached) or ``FieldError`` (a form field).
Numbers, dates and colours follow the gateway's web UI (see ``formatting``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import html
import json
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, date, datetime, timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx2
import ipywidgets as w

from conduit_tornado import AdminClient, AdminError, RunningGateway
from conduit_tornado.admin_client import unreachable

from .formatting import (
    CSS,
    DURATIONS,
    bar_chart,
    budget_text,
    count,
    day_text,
    limits_text,
    money,
    parse_expiry,
    parse_time,
    relative,
    time_text,
)

LIMIT_FIELDS = ("rpm", "rpd", "tpm", "max_parallel")
LABELS = {
    "name": "Name",
    "allowed_models": "Allowed models",
    "allowed_ips": "Allowed addresses",
    "group": "Group",
    "expires_at": "Expires",
    "rpm": "Requests per minute",
    "rpd": "Requests per day",
    "tpm": "Tokens per minute",
    "max_parallel": "Parallel requests",
    "max_budget": "Budget (USD)",
    "budget_duration": "Budget resets",
    "metadata": "Metadata (JSON)",
}
HELP = {
    "name": "Who or what uses the key, e.g. alice-notebook. Required.",
    "allowed_models": "Pick mapped models (Ctrl/Cmd-click for several); none picked and no "
    "patterns: every model.",
    "patterns": "More names or patterns, comma-separated, e.g. gpt-4o*.",
    "allowed_ips": "IP addresses or CIDR networks, comma-separated, e.g. 10.0.0.0/8. Empty: any.",
    "group": "Keys in a group share its budget and limits.",
    "expires_at": "A duration from now (30d, 12h, 2w) or a date (2027-01-31). Empty: never.",
    "rpm": "Requests admitted per minute, e.g. 600.",
    "rpd": "Requests admitted per day.",
    "tpm": "Prompt plus completion tokens per minute, e.g. 200000.",
    "max_parallel": "Requests in flight at once.",
    "max_budget": "Requests are refused once spend reaches it, e.g. 50.",
    "metadata": 'Your own labels as a JSON object, e.g. {"team": "search"}.',
}


P = ParamSpec("P")
R = TypeVar("R")
PanelT = TypeVar("PanelT", bound="_Panel")


def _on_owner(
    method: Callable[Concatenate[PanelT, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[PanelT, P], Coroutine[Any, Any, R]]:
    """Run an action on the loop that owns the widget's HTTP client, whichever loop awaits it.

    JupyterLab >= 4.4 delivers widget messages on kernel subshells: another thread with its
    own event loop. An HTTP client's connections belong to the loop that opened them, so the
    work is handed to that loop instead of being run where the click arrived."""

    async def run(self: PanelT, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await self._on_owner_loop(method(self, *args, **kwargs))

    run.__name__, run.__qualname__, run.__doc__ = (
        method.__name__,
        method.__qualname__,
        method.__doc__,
    )
    return run


class _Panel(w.VBox):
    """An async-driven widget: runs its work on one loop and shows errors in place."""

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
            self._master_key: str | None = None  # the gateway's client is the one to use
        elif url and master_key:
            self._admin, self._url = AdminClient(url, master_key), url.rstrip("/")
            self._master_key = master_key
        else:
            raise ValueError("give gateway=, or url= and master_key=")
        try:  # in a notebook: the kernel's loop, where an embedded gateway serves too
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._pending: set[concurrent.futures.Future[None]] = set()
        self._spoke = False
        self.status = w.HTML()
        self.add_class("conduit")

    def _owner(self) -> asyncio.AbstractEventLoop:
        """The loop the work runs on; adopted from the caller when the first one has ended."""
        if self._loop is not None and not self._loop.is_closed():
            return self._loop
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            raise AdminError(
                0,
                "This widget has no running event loop to work on. Create it in a notebook "
                "cell (or inside async code), then click again.",
                "no_event_loop",
                None,
            ) from None
        if self._loop is not None and self._master_key is None:
            raise AdminError(
                0,
                f"The gateway at {self._url} was started on an event loop that has ended. "
                "Start it again and make a new widget.",
                "gateway_stopped",
                None,
            )
        if self._loop is not None and self._master_key is not None:
            self._admin = AdminClient(self._url, self._master_key)  # the old one died with its loop
        self._loop = current
        return current

    async def _on_owner_loop(self, work: Coroutine[Any, Any, R]) -> R:
        try:
            owner = self._owner()
        except AdminError:
            work.close()
            raise
        if owner is asyncio.get_running_loop():
            return await work
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, owner))

    def _spawn(self, work: Coroutine[Any, Any, object]) -> None:
        """Start an action from a click, on the owning loop, from any thread."""
        try:
            owner = self._owner()
        except AdminError as exc:
            work.close()
            self.show_error(exc.message)
            return
        future = asyncio.run_coroutine_threadsafe(self._guard(work), owner)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    async def _guard(self, work: Coroutine[Any, Any, object]) -> None:
        self._spoke = False
        try:
            await work
        except AdminError as exc:
            self.show_error(self._sentence(exc))
        except FieldError as exc:
            self.show_error(str(exc))
        except Exception as exc:  # the widget reports; the notebook does not crash
            self.show_error(f"Something went wrong: {type(exc).__name__}: {exc}")
        else:
            if not self._spoke:
                self.status.value = ""  # the last error no longer holds

    def _sentence(self, exc: AdminError) -> str:
        if exc.status == 401:
            return (
                f"The gateway at {self._url} refused the master key. Pass the master key it "
                "was started with (CONDUIT_MASTER_KEY) as master_key=."
            )
        label = LABELS.get(exc.param or "", "")
        return f"{label}: {exc.message}" if label and label not in exc.message else exc.message

    def show_error(self, message: str) -> None:
        self._spoke = True
        self.status.value = (
            f'<div class="conduit-error" role="alert">⚠ Error: {html.escape(message)}</div>'
        )

    def show_ok(self, message: str) -> None:
        self._spoke = True
        self.status.value = f'<div class="conduit-ok" role="status">{html.escape(message)}</div>'

    async def settle(self) -> None:
        """Wait for every action started by a click (tests, or code after a click)."""
        while self._pending:
            await asyncio.gather(*(asyncio.wrap_future(f) for f in list(self._pending)))


class FieldError(ValueError):
    """A form field that cannot be read, named by its label."""


class _Form:
    """Makes a form's fields. Layouts and styles are shared: every widget is a comm made on
    the kernel's loop, and a form of 13 fields need not cost 80 of them."""

    def __init__(self) -> None:
        self.layout = w.Layout(width="440px")
        self.note_layout = w.Layout()

    def field(self, cls: type[w.Widget], name: str, **kwargs: Any) -> Any:
        return cls(
            description=LABELS.get(name, name),
            style={"description_width": "140px"},
            layout=self.layout,
            **kwargs,
        )

    def help(self, widget: w.Widget, text: str) -> list[w.Widget]:
        """The field, then its help text under the input."""
        note = w.HTML(html.escape(text), layout=self.note_layout)
        note.add_class("cd-help")
        return [widget, note]


def _int(field: w.Text) -> int | None:
    value = field.value.strip().replace(",", "").replace("_", "")
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise FieldError(f"{field.description} must be a positive whole number, e.g. 600.")
    return int(value)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _status(key: dict[str, Any]) -> tuple[str, str]:
    """The badge: words first (no emoji font needed), colour second."""
    if not key.get("enabled", True):
        return "Disabled", "neutral"
    expires = parse_time(key.get("expires_at"))
    if expires is not None and expires <= datetime.now(UTC):
        return "Expired", "bad"
    budget = key.get("max_budget")
    if budget is not None and float(key.get("spend") or 0) >= float(budget):
        return "Over budget", "bad"
    return "Active", "ok"


def _spend_cell(key: dict[str, Any]) -> str:
    text = html.escape(budget_text(key))
    budget = key.get("max_budget")
    if not budget:
        return text
    share = min(1.0, float(key.get("spend") or 0) / float(budget))
    level = "" if share < 0.8 else " warn" if share < 1 else " bad"
    return (
        f'{text}<div class="cd-bar{level}" role="img" aria-label="{share:.0%} of the budget">'
        f'<span style="width:{share * 100:.0f}%"></span></div>'
    )


def _time_cell(value: object, never: str) -> str:
    if not value:
        return f'<span class="cd-sub">{never}</span>'
    return f'<span title="{html.escape(time_text(value))}">{html.escape(relative(value))}</span>'


COLUMNS = [
    # label, sort key (None: not sortable), grid track
    ("Name", "name", "minmax(120px, 1.1fr)"),
    ("Status", "status", "max-content"),
    ("Group", "group", "minmax(60px, .6fr)"),
    ("Models", None, "minmax(90px, 1fr)"),
    ("Limits", None, "minmax(100px, 1fr)"),
    ("Spend / budget", "spend", "minmax(150px, 1.4fr)"),
    ("Expires", "expires", "92px"),
    ("Last used", "last_used", "92px"),
    ("Actions", None, "max-content"),
]
SORTS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "name": lambda k: str(k.get("name", "")).lower(),
    "status": lambda k: _status(k)[0],
    "group": lambda k: str(k.get("group") or "~"),
    "spend": lambda k: float(k.get("spend") or 0),
    "expires": lambda k: str(k.get("expires_at") or "9999"),
    "last_used": lambda k: str(k.get("last_used_at") or ""),
}


class KeyManager(_Panel):
    """One aligned grid of virtual keys with create, edit, enable/disable, rotate, delete."""

    def __init__(self, gateway: RunningGateway | None = None, **kwargs: Any) -> None:
        super().__init__(gateway, **kwargs)
        self.grid = w.GridBox(
            layout=w.Layout(grid_template_columns=" ".join(c[2] for c in COLUMNS), width="100%")
        )
        self.grid.add_class("cd-grid")
        self.rows = self.grid  # the table, for code that looked for it by its old name
        self.summary = w.HTML()
        self.secret = w.HTML()
        self.editing: str | None = None
        self._confirm: str | None = None
        self.sort_by, self.descending = "name", False
        self._buttons: dict[str, dict[str, w.Button]] = {}
        self._rows: dict[str, list[w.Widget]] = {}
        self._heads = self._header()
        f = _Form()
        self.name = f.field(w.Text, "name", placeholder="alice-notebook")
        self.model_picker = f.field(w.SelectMultiple, "allowed_models", options=[], rows=4)
        self.models = f.field(w.Text, "patterns", placeholder="gpt-4o*, claude-*")
        self.models.description = "More models"
        self.ips = f.field(w.Text, "allowed_ips", placeholder="any address")
        self.group = f.field(w.Text, "group", placeholder="no group")
        self.limits = {n: f.field(w.Text, n, placeholder="no limit") for n in LIMIT_FIELDS}
        self.max_budget = f.field(w.Text, "max_budget", placeholder="no budget")
        self.budget_duration = f.field(w.Dropdown, "budget_duration", options=DURATIONS)
        self.expires = f.field(w.Text, "expires_at", placeholder="30d or 2027-01-31 (never)")
        self.metadata = f.field(w.Textarea, "metadata", placeholder='{"team": "search"}')
        self.create_button = w.Button(description="Create key", button_style="primary", icon="plus")
        self.save_button = w.Button(description="Save changes", button_style="success")
        self.cancel_button = w.Button(description="Cancel edit")
        self.save_button.layout.display = self.cancel_button.layout.display = "none"
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.create_button.on_click(lambda _: self._spawn(self.create()))
        self.save_button.on_click(lambda _: self._spawn(self.save()))
        self.cancel_button.on_click(lambda _: self._clear_form())
        self.refresh_button.on_click(lambda _: self._spawn(self.refresh()))
        self.form_title = w.HTML("<h3>Create a key</h3>")
        column = w.Layout(min_width="450px", flex="1 1 450px")
        form = w.VBox(
            [
                self.form_title,
                w.HBox(
                    [
                        w.VBox(
                            [
                                *f.help(self.name, HELP["name"]),
                                *f.help(self.model_picker, HELP["allowed_models"]),
                                *f.help(self.models, HELP["patterns"]),
                                *f.help(self.expires, HELP["expires_at"]),
                                *f.help(self.group, HELP["group"]),
                                *f.help(self.ips, HELP["allowed_ips"]),
                            ],
                            layout=column,
                        ),
                        w.VBox(
                            [
                                *(x for n, i in self.limits.items() for x in f.help(i, HELP[n])),
                                *f.help(self.max_budget, HELP["max_budget"]),
                                self.budget_duration,
                                *f.help(self.metadata, HELP["metadata"]),
                            ],
                            layout=column,
                        ),
                    ],
                    layout=w.Layout(flex_flow="row wrap"),
                ),
                w.HBox([self.create_button, self.save_button, self.cancel_button]),
            ]
        )
        self.children = [
            w.HTML(CSS),
            w.HBox([w.HTML("<h3>Virtual keys</h3>"), self.refresh_button], layout=_spread()),
            self.summary,
            self.grid,
            self.secret,
            self.status,
            form,
        ]
        self.data: list[dict[str, Any]] = []
        self._mapped: list[str] = []

    # -- reading -----------------------------------------------------------------------

    @_on_owner
    async def refresh(self) -> None:
        keys: list[dict[str, Any]] = []
        while True:  # every page: the grid is the whole list
            page = await self._admin.list_keys(limit=1000, offset=len(keys))
            keys.extend(page["data"])
            if len(keys) >= page["total"] or not page["data"]:
                break
        self.data = keys
        models = await self._admin.list_models()
        self._mapped = sorted(m["name"] for m in models["data"])
        if list(self.model_picker.options) != self._mapped:
            chosen = [m for m in self.model_picker.value if m in self._mapped]
            self.model_picker.options = self._mapped
            self.model_picker.value = tuple(chosen)
        self._draw()

    def sort(self, column: str) -> None:
        """Sort the grid by a column; the same column again reverses the order."""
        if column == self.sort_by:
            self.descending = not self.descending
        else:
            self.sort_by, self.descending = column, column in ("spend", "last_used")
        self._draw()

    def _draw(self) -> None:
        """Lay the grid out again. Row widgets are kept per key and updated in place: making
        widgets is what costs (each is a comm), and it runs on the kernel's loop."""
        for head, (label, key, _) in zip(self._heads, COLUMNS, strict=True):
            arrow = (" ▼" if self.descending else " ▲") if key == self.sort_by else ""
            head.description = label + arrow
        rows = sorted(self.data, key=SORTS[self.sort_by], reverse=self.descending)
        cells: list[w.Widget] = list(self._heads)
        for item in rows:
            cells.extend(self._row(item))
        for gone in set(self._rows) - {k["id"] for k in rows}:
            for widget in self._rows.pop(gone):
                widget.close()
            self._buttons.pop(gone, None)
        self.grid.children = cells
        self.summary.value = (
            '<div class="cd-empty"><b>No keys yet.</b>Create one with the form below: a name '
            "is enough. Its secret is shown once.</div>"
            if not self.data
            else f'<span class="cd-sub">{count(len(self.data))} '
            f"key{'s' if len(self.data) != 1 else ''} · hover a time for the local date</span>"
        )
        self.grid.layout.display = "grid" if self.data else "none"

    def _header(self) -> list[w.Button]:
        heads = []
        for label, key, _ in COLUMNS:
            head = w.Button(description=label, tooltip=f"Sort by {label.lower()}")
            head.add_class("cd-th")
            if key is None:
                head.disabled = True
            else:
                head.on_click(lambda _, k=key: self.sort(k))
            heads.append(head)
        return heads

    def _row(self, key: dict[str, Any]) -> list[w.Widget]:
        label, level = _status(key)
        models = key.get("allowed_models") or []
        texts = [
            f"<b>{html.escape(key['name'])}</b><br>"
            f'<span class="cd-mono cd-sub">{html.escape(key["prefix"])}…</span>',
            f'<span class="cd-badge {level}">{label}</span>',
            html.escape(key.get("group") or "—"),
            html.escape(", ".join(models)) if models else '<span class="cd-sub">All models</span>',
            html.escape(limits_text(key)),
            _spend_cell(key),
            _time_cell(key.get("expires_at"), "Never"),
            _time_cell(key.get("last_used_at"), "Never used"),
        ]
        kid = key["id"]
        row = self._rows.get(kid)
        if row is None:
            row = self._new_row(kid, len(texts))
            self._rows[kid] = row
        for cell, text in zip(row, texts, strict=False):
            if cell.value != text:
                cell.value = text
        _, toggle, _, delete = row[-1].children
        toggle.description = "Disable" if key.get("enabled", True) else "Enable"
        confirming = self._confirm == kid
        delete.description = "Confirm delete" if confirming else "Delete"
        delete.button_style = "danger" if confirming else ""
        self._buttons[kid] = {b.description: b for b in row[-1].children}
        return row

    def _new_row(self, kid: str, columns: int) -> list[w.Widget]:
        cells: list[w.Widget] = []
        for _ in range(columns):
            cell = w.HTML()
            cell.add_class("cd-cell")
            cells.append(cell)
        toggle = w.Button(description="Disable")
        rotate = w.Button(description="Rotate", tooltip="New secret; the old one stops working")
        edit = w.Button(description="Edit")
        delete = w.Button(description="Delete")
        toggle.on_click(lambda _: self._spawn(self.toggle(kid)))
        rotate.on_click(lambda _: self._spawn(self.rotate(kid)))
        edit.on_click(lambda _: self.edit(kid))
        delete.on_click(lambda _: self._spawn(self.delete(kid)))
        actions = w.GridBox(  # two by two: the grid fits a notebook beside the file browser
            [edit, toggle, rotate, delete],
            layout=w.Layout(grid_template_columns="auto auto", grid_gap="4px"),
        )
        actions.add_class("cd-actions")
        actions.add_class("cd-cell")
        return [*cells, actions]

    def row_buttons(self, key_id: str) -> dict[str, w.Button]:
        """The action buttons of one key's row, by label (for code and tests)."""
        return self._buttons[key_id]

    # -- writing -----------------------------------------------------------------------

    def _fields(self) -> dict[str, Any]:
        name = self.name.value.strip()
        if not name:
            raise FieldError("Name is required: who or what uses the key, e.g. alice-notebook.")
        fields: dict[str, Any] = {
            "name": name,
            "allowed_models": [*self.model_picker.value, *_split(self.models.value)],
            "allowed_ips": _split(self.ips.value),
            "group": self.group.value.strip() or None,
        }
        try:
            fields["expires_at"] = parse_expiry(self.expires.value)
        except ValueError as exc:
            raise FieldError(f"Expires {exc}.") from None
        for name, field in self.limits.items():
            fields[name] = _int(field)
        budget = self.max_budget.value.strip().lstrip("$").replace(",", "")
        try:
            fields["max_budget"] = float(budget) if budget else None
        except ValueError:
            raise FieldError("Budget (USD) must be an amount in dollars, e.g. 50.") from None
        fields["budget_duration"] = self.budget_duration.value if budget else None
        meta = self.metadata.value.strip()
        try:
            fields["metadata"] = json.loads(meta) if meta else {}
        except ValueError as exc:
            raise FieldError(
                f'Metadata (JSON) must be a JSON object such as {{"team": "search"}} ({exc}).'
            ) from None
        if not isinstance(fields["metadata"], dict):
            raise FieldError('Metadata (JSON) must be a JSON object such as {"team": "search"}.')
        return fields

    @_on_owner
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
            f'<div class="cd-secret" role="status">New key for <b>{html.escape(name)}</b> '
            f"(shown once: store it now):<br>"
            f'<code class="cd-mono" style="user-select:all">{value}</code> '
            f"<button onclick=\"navigator.clipboard.writeText('{value}')\">Copy</button></div>"
        )
        self.last_secret = secret

    def edit(self, key_id: str) -> None:
        key = next(k for k in self.data if k["id"] == key_id)
        self.editing = key_id
        self.form_title.value = f"<h3>Edit {html.escape(key['name'])}</h3>"
        self.name.value = key["name"]
        allowed = key.get("allowed_models") or []
        self.model_picker.value = tuple(m for m in allowed if m in self._mapped)
        self.models.value = ", ".join(m for m in allowed if m not in self._mapped)
        self.ips.value = ", ".join(key.get("allowed_ips") or [])
        self.group.value = key.get("group") or ""
        expires = parse_time(key.get("expires_at"))
        self.expires.value = expires.isoformat() if expires else ""
        for name, field in self.limits.items():
            field.value = str(key.get(name) or "")
        self.max_budget.value = "" if key.get("max_budget") is None else str(key["max_budget"])
        self.budget_duration.value = key.get("budget_duration") or "total"
        self.metadata.value = json.dumps(key.get("metadata") or {})
        self.save_button.layout.display = self.cancel_button.layout.display = None
        self.save_button.disabled = self.cancel_button.disabled = False
        self.create_button.layout.display = "none"

    @_on_owner
    async def save(self) -> None:
        if self.editing is None:
            return
        fields = self._fields()
        fields["allowed_models"] = fields["allowed_models"] or None
        fields["allowed_ips"] = fields["allowed_ips"] or None
        saved = await self._admin.update_key(self.editing, **fields)
        self._clear_form()
        self.show_ok(f"Saved {saved.get('name', 'the key')}.")
        await self.refresh()

    def _clear_form(self) -> None:
        self.editing = None
        self.form_title.value = "<h3>Create a key</h3>"
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
        self.model_picker.value = ()
        self.save_button.layout.display = self.cancel_button.layout.display = "none"
        self.save_button.disabled = self.cancel_button.disabled = True
        self.create_button.layout.display = None

    @_on_owner
    async def toggle(self, key_id: str) -> None:
        key = next(k for k in self.data if k["id"] == key_id)
        await self._admin.update_key(key_id, enabled=not key.get("enabled", True))
        self.secret.value = ""
        await self.refresh()

    @_on_owner
    async def rotate(self, key_id: str) -> None:
        rotated = await self._admin.rotate_key(key_id)
        self._show_secret(rotated["name"], rotated["key"])
        await self.refresh()

    @_on_owner
    async def delete(self, key_id: str) -> None:
        """First click asks to confirm; the second deletes."""
        if self._confirm != key_id:
            self._confirm = key_id
            self._draw()
            return
        self._confirm = None
        await self._admin.delete_key(key_id)
        self.secret.value = ""
        self.show_ok("Deleted.")
        await self.refresh()


def _spread() -> w.Layout:
    return w.Layout(justify_content="space-between", align_items="center", width="100%")


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
            description="Range",
            options=[("Last 7 days", 7), ("Last 30 days", 30), ("Last 90 days", 90)],
            value=7,
        )
        self.metric = w.Dropdown(
            description="Show", options=list(self.METRICS), value="Spend (USD)"
        )
        self.by = w.Dropdown(
            description="Stack by", options=[("model", "model"), ("key", "key_id")], value="model"
        )
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.chart = w.HTML()
        self.summary = w.HTML()
        for control in (self.range, self.metric, self.by):
            control.observe(lambda _: self._spawn(self.refresh()), names="value")
        self.refresh_button.on_click(lambda _: self._spawn(self.refresh()))
        self.children = [
            w.HTML(CSS),
            w.HTML("<h3>Usage</h3>"),
            w.HBox([self.range, self.metric, self.by, self.refresh_button]),
            self.summary,
            self.chart,
            self.status,
        ]
        self.series: dict[str, list[float]] = {}
        self.days: list[str] = []

    @_on_owner
    async def refresh(self) -> None:
        end = self._today or datetime.now(UTC).date()
        span = int(self.range.value)
        start = end - timedelta(days=span - 1)
        days = [(start + timedelta(days=i)).isoformat() for i in range(span)]
        field, unit = self.METRICS[self.metric.value]
        by = self.by.value
        rows: list[dict[str, Any]] = []
        while True:
            page = await self._admin.usage(
                start=start.isoformat(), end=end.isoformat(), offset=len(rows), limit=1000
            )
            rows.extend(page["data"])
            if len(rows) >= page["total"] or not page["data"]:
                break
        names = await self._key_names() if by == "key_id" else {}
        series: dict[str, list[float]] = {}
        index = {d: i for i, d in enumerate(days)}
        for row in rows:
            label = names.get(row[by], row[by]) or "(none)"
            values = series.setdefault(label, [0.0] * len(days))
            if row["day"] in index:
                values[index[row["day"]]] += float(row.get(field) or 0)
        self.days = days
        self.series = dict(sorted(series.items(), key=lambda kv: -sum(kv[1])))
        totals = page.get("totals") or {}
        named = f"{self.range.label} ({day_text(start)} to {day_text(end)}, UTC days)"
        self.chart.value = (
            bar_chart(days, self.series, unit, f"{self.metric.value} per day, {named}")
            if any(any(v) for v in self.series.values())
            else '<div class="cd-empty"><b>No usage in this range yet.</b>Send a request '
            "with a virtual key, then refresh; or pick a longer range.</div>"
        )
        unpriced = float(totals.get("unpriced_requests") or 0)
        self.summary.value = (
            f"<div><b>{html.escape(named)}</b>: {count(totals.get('requests'))} requests · "
            f"{count(totals.get('total_tokens'))} tokens · {money(totals.get('cost'))} spend"
            + (f" · {count(unpriced)} without a price" if unpriced else "")
            + "</div>"
        )

    async def _key_names(self) -> dict[str, str]:
        return {k["id"]: k["name"] for k in (await self._admin.list_keys(limit=1000))["data"]}


class MyUsage(_Panel):
    """A hub user's own key and usage, with their virtual key (no master key): the
    budget and its reset, the limits, and spend per day over a chosen range. Defaults to
    ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``, which the hub's spawn hook sets."""

    def __init__(
        self,
        *,
        url: str | None = None,
        key: str | None = None,
        today: date | None = None,
        **kwargs: Any,
    ) -> None:
        from .hub import UserClient

        w.VBox.__init__(self, **kwargs)  # no admin client: _Panel's set-up, minus that
        self._client = UserClient(url, key)
        self._url = self._client.url
        self._master_key = None
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._pending = set()
        self._spoke = False
        self.status = w.HTML()
        self.add_class("conduit")
        self._today = today
        self.range = w.Dropdown(
            description="Range",
            options=[("Last 7 days", 7), ("Last 30 days", 30), ("Last 90 days", 90)],
            value=7,
        )
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.key_info = w.HTML()
        self.summary = w.HTML()
        self.chart = w.HTML()
        self.range.observe(lambda _: self._spawn(self.refresh()), names="value")
        self.refresh_button.on_click(lambda _: self._spawn(self.refresh()))
        self.children = [
            w.HTML(CSS),
            w.HTML("<h3>My usage</h3>"),
            self.key_info,
            w.HBox([self.range, self.refresh_button]),
            self.summary,
            self.chart,
            self.status,
        ]
        self.me: dict[str, Any] = {}
        self.days: list[str] = []
        self.series: dict[str, list[float]] = {}

    async def aclose(self) -> None:
        """Close the widget's HTTP client (when done with it outside a notebook)."""
        await self._client.aclose()

    def _sentence(self, exc: AdminError) -> str:
        if exc.status == 401:
            return (
                f"The gateway at {self._url} refused this key (OPENAI_API_KEY): it was "
                "rotated or revoked. Restart your server from the hub to get the current one."
            )
        return exc.message

    @_on_owner
    async def refresh(self) -> None:
        end = self._today or datetime.now(UTC).date()
        span = int(self.range.value)
        start = end - timedelta(days=span - 1)
        days = [(start + timedelta(days=i)).isoformat() for i in range(span)]
        self.me = await self._client.me()
        usage = await self._client.usage(start=start.isoformat(), end=end.isoformat())
        key = usage["key"]
        spend = [0.0] * span
        index = {d: i for i, d in enumerate(days)}
        for row in usage["data"]:
            if row["day"] in index:
                spend[index[row["day"]]] += float(row.get("cost") or 0)
        self.days, self.series = days, {key["name"]: spend}
        who = self.me.get("user") or key["name"]
        self.key_info.value = (
            f"<div><b>{html.escape(str(who))}</b> · key {html.escape(key['name'])} "
            f"({html.escape(key['prefix'])}…) · {html.escape(budget_text(key))} · "
            f"{html.escape(limits_text(key) or 'no rate limits')}</div>"
        )
        totals = usage["totals"]
        named = f"{self.range.label} ({day_text(start)} to {day_text(end)}, UTC days)"
        self.summary.value = (
            f"<div><b>{html.escape(named)}</b>: {count(totals.get('requests'))} requests · "
            f"{count(totals.get('total_tokens'))} tokens · {money(totals.get('cost'))} spend</div>"
        )
        self.chart.value = (
            bar_chart(days, self.series, "USD", f"Spend (USD) per day, {named}")
            if any(spend)
            else '<div class="cd-empty"><b>No usage in this range yet.</b>Call a model with '
            "OpenAI() in a notebook, then refresh.</div>"
        )


TEMP_KEY_LIFETIME = timedelta(hours=1)
TEMP_KEY_BUDGET = 1.0  # USD: a typo in a loop costs at most this


class Playground(_Panel):
    """Pick a key and a model, send a message, watch the answer stream in (Chat Completions,
    or the Responses API where the gateway serves it)."""

    def __init__(self, gateway: RunningGateway | None = None, **kwargs: Any) -> None:
        super().__init__(gateway, **kwargs)
        style = {"description_width": "70px"}
        self.key = w.Password(
            description="Key",
            placeholder="condt_… (or a temporary one)",
            style=style,
            layout=w.Layout(width="420px"),
        )
        self.temp_key_button = w.Button(
            description="Use a temporary key", icon="key", layout=w.Layout(width="auto")
        )
        self.key_note = w.HTML()
        self.model = w.Dropdown(
            description="Model", options=[], style=style, layout=w.Layout(width="420px")
        )
        self.mode = w.ToggleButtons(  # labelled by the HBox below: a description sits above
            options=["Chat Completions", "Responses"],
            value="Chat Completions",
            tooltips=["POST /v1/chat/completions", "POST /v1/responses"],
            style={"button_width": "150px"},
        )
        self.mode_note = w.HTML()
        self.prompt = w.Textarea(
            description="Message",
            placeholder="Ask something",
            style=style,
            layout=w.Layout(width="90%"),
        )
        self.send_button = w.Button(description="Send", button_style="primary", icon="paper-plane")
        self.output = w.HTML()
        self.stats = w.HTML()
        self.temp_key_button.on_click(lambda _: self._spawn(self.temporary_key()))
        self.mode.observe(
            lambda change: (
                self._spawn(self.check_responses()) if change["new"] == "Responses" else None
            ),
            names="value",
        )
        self.send_button.on_click(lambda _: self._spawn(self.send()))
        self.children = [
            w.HTML(CSS),
            w.HTML("<h3>Playground</h3>"),
            w.HBox([self.key, self.temp_key_button]),
            self.key_note,
            self.model,
            w.HBox(
                [
                    w.HTML(
                        '<div style="text-align:right;padding-right:8px">API</div>',
                        layout=w.Layout(width="70px"),
                    ),
                    self.mode,
                    self.mode_note,
                ],
                layout=w.Layout(align_items="center", grid_gap="8px"),
            ),
            self.prompt,
            self.send_button,
            self.output,
            self.stats,
            self.status,
        ]
        self.text = ""
        self.responses_served: bool | None = None
        self._temp: tuple[str, datetime] | None = None
        if self._loop is not None:  # fill the model list at once, as a person expects
            self._spawn(self.refresh())

    @_on_owner
    async def refresh(self) -> None:
        models = await self._admin.list_models()
        names = [m["name"] for m in models["data"]]
        if list(self.model.options) != names:
            self.model.options = names

    @_on_owner
    async def check_responses(self) -> bool:
        """Whether the gateway serves the Responses API; asked once, when the mode is first
        chosen."""
        if self.responses_served is None:
            self.responses_served = await self._serves_responses()
        if not self.responses_served:
            self.mode.value = "Chat Completions"
            self.mode_note.value = (
                '<span class="cd-sub">This gateway does not serve POST /v1/responses '
                "(a newer conduit-tornado does): Chat Completions only.</span>"
            )
        return self.responses_served

    async def _serves_responses(self) -> bool:
        """Ask for a response by id with no key: a gateway with the Responses API refuses the
        missing key (401); one without answers 404 ``unknown_url``. Cheaper than reading the
        OpenAPI document, and it holds when that document cannot be built."""
        try:
            async with httpx2.AsyncClient(timeout=30) as http:
                answer = await http.get(self._url + "/v1/responses/resp_probe")
        except httpx2.TransportError as exc:
            raise unreachable(self._url, exc) from None
        if answer.status_code != 404:
            return True
        try:
            code = (answer.json().get("error") or {}).get("code")
        except ValueError:
            return False
        return code != "unknown_url"

    @_on_owner
    async def temporary_key(self) -> None:
        """A key for this playground only: expires in an hour, spends at most $1, and is
        reused by later clicks until it expires."""
        now = datetime.now(UTC)
        if self._temp is None or self._temp[1] - now < timedelta(minutes=5):
            expires = now + TEMP_KEY_LIFETIME
            created = await self._admin.create_key(
                name="playground (temporary)",
                expires_at=expires.isoformat(),
                max_budget=TEMP_KEY_BUDGET,
                budget_duration="total",
                metadata={"created_by": "Playground widget"},
            )
            self._temp = (created["key"], expires)
        self.key.value = self._temp[0]
        self.key_note.value = (
            f'<span class="cd-sub">Temporary key: expires {html.escape(time_text(self._temp[1]))}'
            f" ({relative(self._temp[1])}), budget {money(TEMP_KEY_BUDGET)}.</span>"
        )

    @_on_owner
    async def send(self) -> None:
        if not self.key.value or not self.model.value or not self.prompt.value.strip():
            self.show_error("Choose a key and a model, and write a message.")
            return
        self.send_button.disabled = True
        self.send_button.description = "Sending…"
        try:
            await self._stream()
        finally:
            self.send_button.disabled = False
            self.send_button.description = "Send"

    async def _stream(self) -> None:
        self.text, self.stats.value = "", ""
        responses = self.mode.value == "Responses" and await self.check_responses()
        if responses:
            path = "/v1/responses"
            body: dict[str, Any] = {
                "model": self.model.value,
                "stream": True,
                "input": self.prompt.value,
            }
        else:
            path = "/v1/chat/completions"
            body = {
                "model": self.model.value,
                "stream": True,
                "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": self.prompt.value}],
            }
        started = time.perf_counter()
        first: float | None = None
        tokens = (0, 0)
        request_id: str | None = None
        try:
            async with (
                httpx2.AsyncClient(timeout=120) as http,
                http.stream(
                    "POST",
                    self._url + path,
                    json=body,
                    headers={"Authorization": f"Bearer {self.key.value}"},
                ) as response,
            ):
                if response.status_code != 200:
                    raw = await response.aread()
                    try:
                        error = json.loads(raw).get("error", {})
                    except ValueError:
                        error = {}
                    self.show_error(
                        error.get("message")
                        or f"{self._url}{path} answered {response.status_code}."
                    )
                    return
                request_id = response.headers.get("x-request-id")
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    piece, tokens, failure = _read_chunk(chunk, responses, tokens)
                    if failure:
                        self.show_error(failure)
                        return
                    if piece:
                        first = first if first is not None else time.perf_counter() - started
                        self.text += piece
                        self.output.value = f'<div class="cd-answer">{html.escape(self.text)}</div>'
        except httpx2.TransportError as exc:
            raise unreachable(self._url, exc) from None
        elapsed = time.perf_counter() - started
        cost = await self._cost(request_id)
        self.stats.value = (
            f'<span class="cd-sub">{elapsed * 1000:,.0f} ms total · first token '
            f"{(first or elapsed) * 1000:,.0f} ms · {count(tokens[0])} prompt + "
            f"{count(tokens[1])} completion tokens · "
            f"{'no price set for this model' if cost is None else money(cost)}</span>"
        )

    async def _cost(self, request_id: str | None) -> float | None:
        if not request_id:
            return None
        logs = await self._admin.logs(request_id=request_id, limit=1)
        return logs["data"][0].get("cost") if logs["data"] else None


def _read_chunk(
    chunk: dict[str, Any], responses: bool, tokens: tuple[int, int]
) -> tuple[str, tuple[int, int], str | None]:
    """One streamed event: (text, token counts so far, error message or None)."""
    if responses:
        kind = chunk.get("type", "")
        if kind == "response.output_text.delta":
            return str(chunk.get("delta") or ""), tokens, None
        if kind in ("response.failed", "error"):
            error = chunk.get("error") or (chunk.get("response") or {}).get("error") or {}
            return "", tokens, str(error.get("message") or "the response failed")
        if kind == "response.completed":
            usage = (chunk.get("response") or {}).get("usage") or {}
            return "", (usage.get("input_tokens", 0), usage.get("output_tokens", 0)), None
        return "", tokens, None
    if "error" in chunk:
        return "", tokens, str(chunk["error"].get("message", "stream error"))
    piece = "".join(
        (choice.get("delta") or {}).get("content") or "" for choice in chunk.get("choices") or []
    )
    usage = chunk.get("usage") or {}
    if usage:
        tokens = (usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
    return piece, tokens, None
