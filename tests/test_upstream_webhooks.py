"""Budget webhooks go out through the shared client configuration (routing/clients.py):
the environment's proxy is honoured and a redirect is never followed (a delivery that
redirects is a failed attempt, retried at the same address)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from conduit_tornado.admission.budgets import Budget, Charge
from conduit_tornado.core.clock import Clock
from conduit_tornado.core.settings import Settings
from conduit_tornado.metering.alerts import Alerts
from conduit_tornado.store import MemoryStore
from tests.fakes.proxy import LoopbackProxy
from tests.fakes.raw import RawServer, fixed

pytestmark = pytest.mark.asyncio
START = datetime(2026, 12, 1, tzinfo=UTC)


def _charge() -> list[Charge]:
    budget = Budget("keys", "k1", "key", "alerted", "30d", START, 1.0)
    return [Charge(budget, 0.4, 0.6, START)]  # crosses the 50% line


async def _deliver(url: str, **settings: object) -> Alerts:
    alerts = Alerts(
        MemoryStore(),
        Settings(
            budget_webhook_url=url,
            budget_alert_thresholds=[0.5],
            budget_webhook_backoff=0.01,
            **settings,  # type: ignore[arg-type]
        ),
        Clock(),
    )
    await alerts.check(_charge())
    await asyncio.wait_for(alerts.drain(), 30)
    return alerts


async def test_a_webhook_goes_through_the_environments_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = await LoopbackProxy().start()
    receiver = await RawServer(fixed(b"")).start()
    for name in ("NO_PROXY", "no_proxy", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    try:
        alerts = await _deliver(receiver.url + "/hook")
    finally:
        await proxy.stop()
        await receiver.stop()
    assert alerts.delivered == 1
    assert proxy.seen == [f"POST {receiver.url}/hook HTTP/1.1"]
    assert receiver.requests[0].headers["x-conduit-event"] == "budget.threshold_crossed"


async def test_a_webhook_redirect_is_not_followed(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    receiver = await RawServer(fixed(b"", status=307, headers={"Location": "/other"})).start()
    try:
        alerts = await _deliver(receiver.url + "/hook", budget_webhook_retries=1)
    finally:
        await receiver.stop()
    assert (alerts.delivered, alerts.failed) == (0, 1)
    assert [r.target for r in receiver.requests] == ["/hook", "/hook"]
