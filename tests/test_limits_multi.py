"""Limits across instances, and budget alerts delivered to a real webhook receiver."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx2
import pytest
import tornado.httpserver
import tornado.web

from conduit_tornado import Settings
from conduit_tornado.admission.budgets import Budget, Charge
from conduit_tornado.core.clock import Clock
from conduit_tornado.metering.alerts import Alerts
from conduit_tornado.store import Store
from tests.conftest import MASTER_KEY, free_port
from tests.proxy_setup import WiredFactory
from tests.served import Served, mock_config, rpm_is_exact_across
from tests.store_faults import Down

pytestmark = pytest.mark.asyncio
HI = [{"role": "user", "content": "Say hello"}]


async def test_rpm_is_exact_across_two_processes(mongo_uri: str, tmp_path: Path) -> None:
    env = {
        "CONDUIT_MONGODB_URI": mongo_uri,
        "CONDUIT_MONGODB_DATABASE": "t_multi_" + os.urandom(4).hex(),
        "CONDUIT_SECRET_KEY": "test-secret",
    }
    served = [await Served.start(tmp_path, config=mock_config(), env=env) for _ in range(2)]
    try:
        await rpm_is_exact_across(served)
    finally:
        for one in served:
            await one.stop()


class Receiver(tornado.web.RequestHandler):
    def initialize(self, got: list[tuple[dict[str, str], bytes]], fail_first: list[int]) -> None:
        self.got = got
        self.fail_first = fail_first

    def post(self) -> None:
        self.got.append(
            ({k.lower(): v for k, v in self.request.headers.items()}, self.request.body)
        )
        if self.fail_first and self.fail_first[0] > 0:
            self.fail_first[0] -= 1
            self.set_status(503)
        self.finish()


def verify(secret: str, header: str, body: bytes) -> bool:
    parts = dict(p.split("=", 1) for p in header.split(","))
    expected = hmac.new(
        secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256
    ).hexdigest()
    fresh = abs(time.time() - int(parts["t"])) < 300
    return fresh and hmac.compare_digest(expected, parts["v1"])


async def test_budget_alerts_reach_a_signed_webhook(wired_with: WiredFactory) -> None:
    got: list[tuple[dict[str, str], bytes]] = []
    fail_first = [1]  # the first delivery fails: the retry must bring it
    port = free_port()
    server = tornado.httpserver.HTTPServer(
        tornado.web.Application([(r"/hook", Receiver, {"got": got, "fail_first": fail_first})])
    )
    server.listen(port, "127.0.0.1")
    secret = "whsec-test-123"
    try:
        w = await wired_with(
            budget_webhook_url=f"http://127.0.0.1:{port}/hook",
            budget_webhook_secret=secret,
            budget_webhook_backoff=0.01,
            budget_alert_thresholds=[0.5, 1.0],
        )
        gw = w.gateway
        created = await w.admin.create_key(name="alerted", max_budget=0.00002)
        async with httpx2.AsyncClient(timeout=30) as http:
            for _ in range(2):  # each costs ~0.0000675: the first crosses 50% and 100% at once
                await http.post(
                    gw.url + "/v1/chat/completions",
                    json={"model": "gpt", "messages": HI},
                    headers={"Authorization": f"Bearer {created['key']}"},
                )
        ctx = gw.ctx
        assert ctx is not None
        for _ in range(100):
            if ctx.alerts.delivered == 2:
                break
            await asyncio.sleep(0.02)
        assert ctx.alerts.delivered == 2
        events: list[dict[str, Any]] = []
        for headers, body in got:
            assert verify(secret, headers["x-conduit-signature"], body)
            assert not verify("wrong-secret", headers["x-conduit-signature"], body)
            events.append(json.loads(body))
        delivered = {e["id"]: e for e in events}  # the retried one arrives twice, same id
        assert sorted(e["threshold"] for e in delivered.values()) == [0.5, 1.0]
        assert all(
            e["subject"] == {"type": "key", "id": created["id"], "name": "alerted"} for e in events
        )
        assert len(got) == 3  # one failed delivery, then its retry, then the other
        async with httpx2.AsyncClient(
            base_url=gw.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}
        ) as http:
            listed = (await http.get("/admin/v1/alerts")).json()
            usage = (await http.get("/admin/v1/usage", params={"key_id": created["id"]})).json()
        assert sorted(a["threshold"] for a in usage["alerts"]) == [0.5, 1.0]
        assert listed["total"] == 2 and all(a["delivered_at"] for a in listed["data"])
    finally:
        server.stop()
        await server.close_all_connections()  # keep-alive sockets, else left to the GC


async def test_an_alert_during_a_store_outage_is_sent_and_recorded_later(store: Store) -> None:
    got: list[tuple[dict[str, str], bytes]] = []
    port = free_port()
    server = tornado.httpserver.HTTPServer(
        tornado.web.Application([(r"/hook", Receiver, {"got": got, "fail_first": [0]})])
    )
    server.listen(port, "127.0.0.1")
    try:
        flaky = Down(store, only="key:key_a:")  # the alert's record: the charge went through
        settings = Settings(
            budget_webhook_url=f"http://127.0.0.1:{port}/hook", budget_alert_thresholds=[0.5]
        )
        alerts = Alerts(cast(Store, flaky), settings, Clock())
        start = datetime(2026, 3, 1, tzinfo=UTC)
        budget = Budget("keys", "key_a", "key", "a", None, start, 1.0)
        flaky.down = True
        await alerts.check([Charge(budget, 0.4, 0.6, start)])
        await alerts.drain()
        assert alerts.delivered == 1 and len(got) == 1  # sent although it is not recorded
        assert await store.count("alerts", {}) == 0
        flaky.down = False
        await alerts.drain()
        (recorded,) = await store.find("alerts", {})
        assert recorded["id"] == json.loads(got[0][1])["id"] and recorded["delivered_at"]
        await alerts.check([Charge(budget, 0.4, 0.6, start)])  # the same crossing again
        await alerts.drain()
        assert alerts.delivered == 1 and await store.count("alerts", {}) == 1
    finally:
        server.stop()
        await server.close_all_connections()  # keep-alive sockets, else left to the GC
