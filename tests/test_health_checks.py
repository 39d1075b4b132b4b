"""Active health checks of deployments against the fake providers: a failing deployment is
tried after the healthy one until it recovers; its state and cooldowns are in the admin
API, the UI's health data and the Prometheus gauges, with no secret in the error shown."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx2
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from conduit_tornado import AdminClient, Gateway
from tests.conftest import MASTER_KEY, GatewayFactory
from tests.fakes.providers import API_KEY, FakeProviders
from tests.proxy_setup import WiredFactory

pytestmark = pytest.mark.asyncio
HI = [{"role": "user", "content": "Say hello"}]
ADMIN = {"Authorization": f"Bearer {MASTER_KEY}"}
LIST = "models"  # fake.then(for_model=LIST): a directive for the model-list calls only


@pytest_asyncio.fixture
async def fakes() -> AsyncIterator[tuple[FakeProviders, FakeProviders]]:
    sick, well = FakeProviders(), FakeProviders()
    await sick.start()
    await well.start()
    yield sick, well
    await sick.stop()
    await well.stop()


async def _until(check: Callable[[], Awaitable[bool]], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "the state did not change in time"
        await asyncio.sleep(0.05)


class Setup:
    def __init__(self, gw: Gateway, key: str, http: httpx2.AsyncClient) -> None:
        self.gw, self.key, self.http = gw, key, http

    async def deployments(self) -> dict[str, dict[str, Any]]:
        answer = await self.http.get("/admin/v1/health/deployments", headers=ADMIN)
        assert answer.status_code == 200
        return {f"{d['provider']}/{d['deployment']}": d for d in answer.json()["data"]}

    async def chat(self) -> httpx2.Response:
        return await self.http.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": HI},
            headers={"Authorization": f"Bearer {self.key}"},
        )


PREFERRED = [
    {"provider": "pa", "model": "x", "priority": 0},  # preferred while it is healthy
    {"provider": "pb", "model": "y", "priority": 1},
]


@contextlib.asynccontextmanager
async def _setup(
    start_gateway: GatewayFactory,
    sick: FakeProviders,
    well: FakeProviders,
    deployments: list[dict[str, Any]] = PREFERRED,
    **settings: Any,
) -> AsyncIterator[Setup]:
    """Model "m" on deployment x of provider "pa" (the sick fake) and y of "pb" (the well
    one), and a key."""
    gw = await start_gateway(retry_backoff=0.01, **settings)
    async with (
        AdminClient(gw.url, MASTER_KEY) as admin,
        httpx2.AsyncClient(base_url=gw.url, timeout=30) as http,
    ):
        for name, fake in (("pa", sick), ("pb", well)):
            await admin.create_provider(
                name=name, type="openai", base_url=fake.url + "/v1", api_key=API_KEY
            )
        await admin.create_model(name="m", deployments=deployments)
        key = (await admin.create_key(name="health"))["key"]
        yield Setup(gw, key, http)


def _gauge(name: str, provider: str, deployment: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"provider": provider, "deployment": deployment})


async def test_an_unhealthy_deployment_is_tried_last_until_it_recovers(
    start_gateway: GatewayFactory, fakes: tuple[FakeProviders, FakeProviders]
) -> None:
    sick, well = fakes
    async with _setup(start_gateway, sick, well, health_check_interval=0.2) as s:

        async def checked_healthy() -> bool:
            d = (await s.deployments())["pa/x"]
            return d["healthy"] is True and d["checked_at"] is not None

        await _until(checked_healthy)
        assert _gauge("conduit_deployment_healthy", "pa", "x") == 1
        assert (await s.chat()).headers["x-conduit-provider"] == "pa"

        # The provider's answer quotes the key, as some do: the state shown must not.
        body = {"error": {"message": f"Incorrect API key provided: {API_KEY}"}}
        for _ in range(200):
            sick.then(status=401, body=body, for_model=LIST)

        async def checked_failing() -> bool:
            return (await s.deployments())["pa/x"]["healthy"] is False

        await _until(checked_failing)
        shown = (await s.deployments())["pa/x"]
        assert shown["last_error"] and API_KEY not in shown["last_error"]
        # Said redacted: by core/scrub.py as the error is made, or by health's own pass.
        assert "[redacted]" in shown["last_error"] or "***" in shown["last_error"]
        assert _gauge("conduit_deployment_healthy", "pa", "x") == 0
        ui = (await s.http.get("/ui/api/health", headers=ADMIN)).json()
        row = next(d for d in ui["deployments"] if d["provider"] == "pa")
        assert row["healthy"] is False and API_KEY not in (row["check_error"] or "")

        chats_before = sum(r.path.endswith("/chat/completions") for r in sick.requests)
        for _ in range(3):
            answer = await s.chat()
            assert answer.status_code == 200
            assert answer.headers["x-conduit-provider"] == "pb"
        assert sum(r.path.endswith("/chat/completions") for r in sick.requests) == chats_before

        sick.script.clear()  # it recovers
        await _until(checked_healthy)
        assert (await s.chat()).headers["x-conduit-provider"] == "pa"
        assert _gauge("conduit_deployment_healthy", "pa", "x") == 1


async def test_an_unhealthy_deployment_still_serves_when_it_is_the_only_one(
    start_gateway: GatewayFactory, fakes: tuple[FakeProviders, FakeProviders]
) -> None:
    sick, well = fakes
    async with _setup(start_gateway, sick, well, health_check_interval=0.2) as s:
        for _ in range(200):
            sick.then(status=503, for_model=LIST)

        async def checked_failing() -> bool:
            return (await s.deployments())["pa/x"]["healthy"] is False

        await _until(checked_failing)
        only_pa = {"deployments": [{"provider": "pa", "model": "x"}]}
        changed = await s.http.patch("/admin/v1/models/m", json=only_pa, headers=ADMIN)
        assert changed.status_code == 200
        answer = await s.chat()  # tried last, but it is all there is
        assert answer.status_code == 200 and answer.headers["x-conduit-provider"] == "pa"


async def test_cooldowns_and_opt_outs_are_shown(
    start_gateway: GatewayFactory, fakes: tuple[FakeProviders, FakeProviders]
) -> None:
    sick, well = fakes
    async with _setup(start_gateway, sick, well, cooldown_failures=1, cooldown_seconds=60) as s:
        shown = await s.deployments()
        assert shown["pa/x"]["health_check"] is False  # checks are off by default
        assert shown["pa/x"]["healthy"] is None and shown["pa/x"]["cooldown"] is False
        sick.then(status=500, for_model="x")
        answer = await s.chat()  # pa fails once, pb answers
        assert answer.headers["x-conduit-provider"] == "pb"
        shown = await s.deployments()
        assert shown["pa/x"]["cooldown"] is True
        assert 0 < shown["pa/x"]["cooldown_remaining"] <= 60
        assert shown["pa/x"]["failures"] == 1
        assert shown["pb/y"]["cooldown"] is False

        async def gauge_says_cooling() -> bool:
            return _gauge("conduit_deployment_cooldown", "pa", "x") == 1

        await _until(gauge_says_cooling)
        assert not sick.requests or all(r.path != "/v1/models" for r in sick.requests)

        # A deployment removed from the mapping leaves the gauges.
        only_pb = {"deployments": [{"provider": "pb", "model": "y"}]}
        changed = await s.http.patch("/admin/v1/models/m", json=only_pb, headers=ADMIN)
        assert changed.status_code == 200

        async def gauge_gone() -> bool:
            return _gauge("conduit_deployment_cooldown", "pa", "x") is None

        await _until(gauge_gone)
        assert "pa/x" not in await s.deployments()


async def test_a_deployment_can_opt_out_of_checks(
    start_gateway: GatewayFactory, fakes: tuple[FakeProviders, FakeProviders]
) -> None:
    sick, well = fakes
    opted_out = [
        {"provider": "pa", "model": "x", "health_check": False},
        {"provider": "pb", "model": "y"},
    ]
    async with _setup(start_gateway, sick, well, opted_out, health_check_interval=0.2) as s:

        async def well_checked() -> bool:
            return (await s.deployments())["pb/y"]["healthy"] is True

        await _until(well_checked)
        pa = (await s.deployments())["pa/x"]
        assert pa["health_check"] is False and pa["healthy"] is None
        assert not [r for r in sick.requests if r.path == "/v1/models"]


async def test_each_provider_type_is_checked_by_its_own_model_list(
    wired_with: WiredFactory, fake: FakeProviders
) -> None:
    w = await wired_with(health_check_interval=0.2)
    async with httpx2.AsyncClient(base_url=w.gateway.url) as http:

        async def all_checked() -> bool:
            answer = await http.get("/admin/v1/health/deployments", headers=ADMIN)
            data = answer.json()["data"]
            return bool(data) and all(d["healthy"] is True for d in data)

        await _until(all_checked)
    lists = {r.path: r for r in fake.requests if r.path.endswith("/models")}
    # Each with its provider's own credentials header (the fake refuses anything else).
    assert lists["/v1/models"].headers.get("authorization") == f"Bearer {API_KEY}" or (
        lists["/v1/models"].headers.get("x-api-key") == API_KEY
    )
    assert lists["/openai/models"].headers["api-key"] == API_KEY
    assert lists["/openai/models"].query["api-version"] == "2024-10-21"
    assert lists["/v1beta/models"].headers["x-goog-api-key"] == API_KEY
    anthropic = [r for r in fake.requests if r.path == "/v1/models" and "x-api-key" in r.headers]
    assert anthropic and anthropic[0].headers["anthropic-version"]
    # One check per provider a round, however many deployments it serves: "oai" serves
    # many and "az" three, yet each was asked about as often (az was added a moment later).
    oai = [r for r in fake.requests if r.path == "/v1/models" and "authorization" in r.headers]
    azure = [r for r in fake.requests if r.path == "/openai/models"]
    assert azure and len(azure) <= len(oai) <= len(azure) + 3
