"""Limits across instances, and budget alerts delivered to a real webhook receiver."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx2
import pytest
import tornado.httpserver
import tornado.web

from conduit_tornado import AdminClient, Settings
from conduit_tornado.admission.budgets import Budget, Charge
from conduit_tornado.core.clock import Clock
from conduit_tornado.metering.alerts import Alerts
from conduit_tornado.store import Store
from tests.conftest import MASTER_KEY, free_port
from tests.proxy_setup import WiredFactory
from tests.store_faults import Down

pytestmark = pytest.mark.asyncio
HI = [{"role": "user", "content": "Say hello"}]


async def _serve(port: int, env: dict[str, str], config: Path) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "conduit_tornado",
        "serve",
        "--port",
        str(port),
        "--config",
        str(config),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    async with httpx2.AsyncClient() as http:
        for _ in range(300):
            try:
                if (await http.get(f"http://127.0.0.1:{port}/health/ready")).status_code == 200:
                    return proc
            except httpx2.TransportError:
                pass
            await asyncio.sleep(0.05)
    proc.kill()
    raise AssertionError("gateway process did not start")


async def test_rpm_is_exact_across_two_processes(mongo_uri: str, tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(
        "providers: [{name: mock, type: mock}]\nmodels: [{name: m, deployments: [{provider: mock, model: x}]}]\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUIT_")}
    env.update(
        {
            "CONDUIT_MONGODB_URI": mongo_uri,
            "CONDUIT_MONGODB_DATABASE": "t_multi_" + os.urandom(4).hex(),
            "CONDUIT_MASTER_KEY": MASTER_KEY,
            "CONDUIT_SECRET_KEY": "test-secret",
        }
    )
    ports = [free_port(), free_port()]
    procs = [await _serve(port, env, config) for port in ports]
    try:
        async with AdminClient(f"http://127.0.0.1:{ports[0]}", MASTER_KEY) as admin:
            key = (await admin.create_key(name="shared", rpm=50))["key"]
        limits = httpx2.Limits(max_connections=200)
        now = datetime.now(UTC)
        second = now.second + now.microsecond / 1e6
        if second > 45:  # these processes keep real time: a burst must not span two minutes
            await asyncio.sleep(60.5 - second)
        async with httpx2.AsyncClient(timeout=60, limits=limits) as http:
            responses = await asyncio.gather(
                *(
                    http.post(
                        f"http://127.0.0.1:{ports[i % 2]}/v1/chat/completions",
                        json={"model": "m", "messages": HI},
                        headers={"Authorization": f"Bearer {key}"},
                    )
                    for i in range(200)
                )
            )
        by_instance = Counter((i % 2, r.status_code) for i, r in enumerate(responses))
        assert Counter(r.status_code for r in responses) == {200: 50, 429: 150}
        assert by_instance[(0, 200)] > 0 and by_instance[(1, 200)] > 0  # both served some
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            await asyncio.wait_for(proc.communicate(), 30)


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
