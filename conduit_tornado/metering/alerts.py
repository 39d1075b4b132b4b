"""Budget alerts: one event per account, period and threshold, to the log, the store and
an optional webhook (signed with HMAC-SHA256, retried with backoff). The webhook is called
through a client from routing/clients.py, configured like every other outbound call
(proxies, CA bundle, no redirects); its answer's body is never read, only its status."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from datetime import timedelta
from typing import Any

import orjson
from pyreqwest.client import Client
from pyreqwest.exceptions import PyreqwestError

from conduit_tornado.admission.budgets import Charge
from conduit_tornado.core.clock import Clock
from conduit_tornado.core.settings import Settings
from conduit_tornado.routing.clients import ClientFactory
from conduit_tornado.store import DuplicateError, Store, StoreUnavailable, log_failure

log = logging.getLogger("conduit.alerts")
ALERTS = "alerts"
SIGNATURE_HEADER = "x-conduit-signature"
WEBHOOK_TIMEOUT = 10.0  # seconds for one delivery attempt, connecting included


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``; receivers recompute it
    and reject old timestamps to stop replays."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


class Alerts:
    def __init__(self, store: Store, settings: Settings, clock: Clock) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._clients = ClientFactory(settings)
        self._http: Client | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.delivered = 0
        self.failed = 0
        self._unrecorded: list[dict[str, Any]] = []  # alerts the store was down for

    async def check(self, charges: list[Charge]) -> None:
        await self._record_unrecorded()
        for charge in charges:
            limit = charge.budget.max_budget
            if not limit:
                continue
            for threshold in sorted(self._settings.budget_alert_thresholds):
                line = threshold * limit
                if charge.before < line <= charge.after:
                    await self._emit(charge, threshold)

    async def _emit(self, charge: Charge, threshold: float) -> None:
        b = charge.budget
        event: dict[str, Any] = {
            "_id": f"{b.kind}:{b.id}:{charge.period_start.isoformat()}:{threshold}",
            "id": "evt_" + secrets.token_hex(12),
            "type": "budget.threshold_crossed",
            "created_at": self._clock.now(),
            "subject": {"type": b.kind, "id": b.id, "name": b.name},
            "threshold": threshold,
            "spend": round(charge.after, 10),
            "max_budget": b.max_budget,
            "period_start": charge.period_start,
        }
        try:
            await self._store.insert(ALERTS, event)  # the unique _id makes it once, everywhere
        except DuplicateError:
            return
        except StoreUnavailable as exc:
            # Only this instance saw this crossing (the charge's before and after come from
            # one atomic increment), so the alert goes out now; its record, once the store
            # is back.
            self._unrecorded.append(event)
            log_failure(log, exc, "recording budget alert %s failed; will retry", event["id"])
        log.warning(
            "budget alert: %s %s crossed %d%% (spent $%.4f of $%.4f)",
            b.kind,
            b.name,
            round(threshold * 100),
            charge.after,
            b.max_budget or 0,
        )
        if self._settings.budget_webhook_url:
            task = asyncio.ensure_future(self._deliver(event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, event: dict[str, Any]) -> None:
        url = self._settings.budget_webhook_url
        assert url is not None
        payload = {k: v for k, v in event.items() if k != "_id"}
        body = orjson.dumps(payload)
        secret = self._settings.budget_webhook_secret
        delay = 1.0
        if self._http is None:  # built once, in a thread: it loads the system's trust store
            self._http = await asyncio.to_thread(
                self._clients.client, connect_timeout=WEBHOOK_TIMEOUT
            )
        http = self._http
        for attempt in range(self._settings.budget_webhook_retries + 1):
            headers = {"Content-Type": "application/json", "x-conduit-event": event["type"]}
            if secret is not None:
                headers[SIGNATURE_HEADER] = sign(secret.get_secret_value(), int(time.time()), body)
            request = (
                http.post(url)
                .headers(headers)
                .body_bytes(body)
                .timeout(timedelta(seconds=WEBHOOK_TIMEOUT))
                .streamed_read_buffer_limit(1)  # the status is all we need
                .build_streamed()
            )
            try:
                async with request as response:
                    status = response.status
            except PyreqwestError as exc:
                status, reason = 0, type(exc).__name__
            if 200 <= status < 300:
                self.delivered += 1
                event["delivered_at"] = self._clock.now()  # if still unrecorded
                with contextlib.suppress(StoreUnavailable):
                    await self._store.update(
                        ALERTS, event["_id"], {"delivered_at": event["delivered_at"]}
                    )
                return
            if status:
                reason = f"HTTP {status}"
            log.warning(
                "webhook delivery of %s failed (%s), attempt %d",
                event["id"],
                reason,
                attempt + 1,
            )
            await asyncio.sleep(delay * self._settings.budget_webhook_backoff)
            delay *= 2
        self.failed += 1
        log.error("webhook delivery of %s gave up", event["id"])

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._record_unrecorded()

    async def _record_unrecorded(self) -> None:
        while self._unrecorded:
            try:
                await self._store.insert(ALERTS, self._unrecorded[0])
            except DuplicateError:
                pass
            except StoreUnavailable:
                return  # still down: next time
            self._unrecorded.pop(0)
