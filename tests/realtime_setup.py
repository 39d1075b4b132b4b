"""A gateway wired to a fake provider's realtime socket: models "rt" (OpenAI) and
"rt-azure" (Azure) and a key, for the realtime tests (a pytest plugin: the fixtures are
everywhere)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect

from conduit_tornado import AdminClient, Gateway
from tests.conftest import MASTER_KEY, GatewayFactory
from tests.fakes.providers import API_KEY
from tests.fakes.realtime import FakeRealtime


@pytest_asyncio.fixture
async def fake_realtime() -> AsyncIterator[FakeRealtime]:
    """A fake provider's realtime socket (OpenAI's and Azure's paths) on loopback."""
    fake = FakeRealtime()
    await fake.start()
    yield fake
    await fake.stop()


class RT:
    def __init__(
        self, gw: Gateway, admin: AdminClient, key: str, key_id: str, fake: FakeRealtime
    ) -> None:
        self.gw, self.admin, self.key, self.key_id, self.fake = gw, admin, key, key_id, fake

    def connect(self, key: str | None = None) -> Any:
        """The realtime socket of model "rt", opened with a key (this one by default)."""
        return connect(
            f"ws://127.0.0.1:{self.gw.port}/v1/realtime?model=rt",
            additional_headers={"Authorization": f"Bearer {key or self.key}"},
        )

    async def session(self, key: str | None = None, **config: Any) -> dict[str, Any]:
        async with httpx2.AsyncClient(base_url=self.gw.url) as http:
            r = await http.post(
                "/v1/realtime/sessions",
                json={"model": "rt", **config},
                headers={"Authorization": f"Bearer {key or self.key}"},
            )
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data


async def setup_realtime(
    start_gateway: GatewayFactory, fake: FakeRealtime, **settings: Any
) -> tuple[RT, AdminClient]:
    gw = await start_gateway(**settings)
    admin = AdminClient(gw.url, MASTER_KEY)
    await admin.create_provider(
        name="oai", type="openai", base_url=fake.url + "/v1", api_key=API_KEY
    )
    await admin.create_provider(name="az", type="azure", base_url=fake.url, api_key=API_KEY)
    await admin.create_model(name="rt", deployments=[{"provider": "oai", "model": "gpt-realtime"}])
    await admin.create_model(
        name="rt-azure", deployments=[{"provider": "az", "model": "my-realtime"}]
    )
    created = await admin.create_key(name="rt-key")
    return RT(gw, admin, created["key"], created["id"], fake), admin


@pytest_asyncio.fixture
async def rt(start_gateway: GatewayFactory, fake_realtime: FakeRealtime) -> AsyncIterator[RT]:
    """A gateway with realtime models on the fake, and a key."""
    env, admin = await setup_realtime(start_gateway, fake_realtime)
    yield env
    await admin.aclose()


async def recv(ws: ClientConnection, until: str) -> list[dict[str, Any]]:
    events = []
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), 10))
        events.append(event)
        if event["type"] == until:
            return events
