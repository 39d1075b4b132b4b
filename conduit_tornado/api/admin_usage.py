"""GET /admin/v1/logs and /admin/v1/usage: request logs, and spend and tokens per
key / model / user / day from the pre-aggregated rollups (never from raw logs)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import tornado.web

from conduit_tornado.core.errors import ApiError
from conduit_tornado.core.money import usage_numbers
from conduit_tornado.metering.alerts import ALERTS
from conduit_tornado.metering.recorder import LOGS, USAGE
from conduit_tornado.store import SETTLED

from .admin import PagedHandler
from .base import AdminHandler

_USAGE_FIELDS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "total_tokens",
    "cost",
    "unpriced_requests",
    "estimated_requests",
)
_GROUPS = {"day": "day", "key": "key_id", "model": "model", "user": "user"}


def _numbers(row: dict[str, Any]) -> dict[str, Any]:
    return usage_numbers(row, _USAGE_FIELDS)


def _log_view(doc: dict[str, Any]) -> dict[str, Any]:
    return {"id": doc["_id"], **{k: v for k, v in doc.items() if k != "_id"}}


class LogsHandler(PagedHandler):
    def _time(self, name: str) -> datetime | None:
        raw = self.get_query_argument(name, None)
        if raw is None:
            return None
        try:
            value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise ApiError(400, f"{name} must be an ISO 8601 date-time.", param=name) from None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value

    async def get(self) -> None:
        offset, limit = self.page()
        where: dict[str, Any] = {}
        for name in ("key_id", "model", "user", "provider", "endpoint", "request_id"):
            value = self.get_query_argument(name, None)
            if value is not None:
                where[name] = value
        status = self.get_query_argument("status", None)
        if status is not None:
            if not status.isdigit():
                raise ApiError(400, "status must be an HTTP status code.", param="status")
            where["status"] = int(status)
        since, until = self._time("since"), self._time("until")
        if since or until:
            where["created_at"] = {
                **({"$gte": since} if since else {}),
                **({"$lt": until} if until else {}),
            }
        await self.ctx.recorder.flush()  # so a caller sees its own requests at once
        store = self.ctx.store
        docs = await store.find(
            LOGS, where, sort="created_at", descending=True, offset=offset, limit=limit
        )
        self.send_page([_log_view(d) for d in docs], await store.count(LOGS, where), offset, limit)


def days_between(handler: tornado.web.RequestHandler) -> dict[str, Any]:
    """The usage filter for the ``start`` and ``end`` query dates (YYYY-MM-DD, inclusive):
    ``{"day": {...}}``, or nothing when neither is given."""

    def day(name: str) -> str | None:
        raw = handler.get_query_argument(name, None)
        if raw is None:
            return None
        try:
            return date.fromisoformat(raw).isoformat()
        except ValueError:
            raise ApiError(400, f"{name} must be a date (YYYY-MM-DD).", param=name) from None

    start, end = day("start"), day("end")
    if not (start or end):
        return {}
    return {"day": {**({"$gte": start} if start else {}), **({"$lte": end} if end else {})}}


class UsageHandler(PagedHandler):
    async def get(self) -> None:
        where: dict[str, Any] = {}
        for name in ("key_id", "model", "user"):
            value = self.get_query_argument(name, None)
            if value is not None:
                where[name] = value
        where.update(days_between(self))
        group = self.get_query_argument("group_by", None)
        if group is not None and group not in _GROUPS:
            raise ApiError(400, f"group_by must be one of {', '.join(_GROUPS)}.", param="group_by")
        await self.ctx.recorder.flush()
        store = self.ctx.store
        sums = await store.sum_by(USAGE, where, "day", _USAGE_FIELDS)
        totals = _numbers({f: sum(row.get(f, 0) for row in sums.values()) for f in _USAGE_FIELDS})
        alert_filter = {"subject.id": where["key_id"]} if "key_id" in where else {}
        alerts = [
            {k: v for k, v in a.items() if k != "_id"}
            for a in await store.find(
                ALERTS, alert_filter, sort="created_at", descending=True, limit=20
            )
        ]
        if group is not None:
            grouped = await store.sum_by(USAGE, where, _GROUPS[group], _USAGE_FIELDS)
            ordered = sorted(grouped.items(), key=lambda kv: str(kv[0]))
            rows = [_numbers({group: k, **v}) for k, v in ordered]
            self.send_json(
                {
                    "object": "usage",
                    "group_by": group,
                    "data": rows,
                    "totals": totals,
                    "alerts": alerts,
                }
            )
            return
        offset, limit = self.page()
        docs = await store.find(
            USAGE, where, sort="day", descending=True, offset=offset, limit=limit
        )
        rows = [_numbers({k: v for k, v in d.items() if k not in ("_id", SETTLED)}) for d in docs]
        self.send_json(
            {
                "object": "usage",
                "data": rows,
                "totals": totals,
                "alerts": alerts,
                "total": await store.count(USAGE, where),
                "offset": offset,
                "limit": limit,
            }
        )


class MetricsHandler(AdminHandler):
    """Operational counters in Prometheus' text format."""

    def get(self) -> None:
        ctx = self.ctx
        rows = [
            (
                "conduit_in_flight_requests",
                "gauge",
                "Requests being served now.",
                ctx.in_flight.requests,
            ),
            (
                "conduit_logs_written_total",
                "counter",
                "Request logs written.",
                ctx.recorder.written,
            ),
            (
                "conduit_logs_pending",
                "gauge",
                "Request logs awaiting a write.",
                ctx.recorder.pending,
            ),
            (
                "conduit_logs_dropped_total",
                "counter",
                "Request logs dropped because the queue was full.",
                ctx.recorder.dropped,
            ),
        ]
        lines = []
        for name, kind, help_text, value in rows:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]
        lines += ctx.overhead.render()
        self.set_header("Content-Type", "text/plain; version=0.0.4")
        self.finish("\n".join(lines) + "\n")
