"""A gateway wired to the fake providers: one provider of each wire format."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx2
import openai
import pytest_asyncio

from conduit_tornado import AdminClient, Gateway
from conduit_tornado.store import Store
from tests.conftest import MASTER_KEY, GatewayFactory
from tests.fakes.otlp import OtlpReceiver
from tests.fakes.providers import API_KEY, FakeProviders

# virtual model -> (provider, deployment model)
MODELS = {
    "gpt": ("oai", "gpt-4o"),
    "azure-gpt": ("az", "my-gpt4o-deployment"),
    "claude": ("ant", "claude-sonnet-4-5"),
    "gem": ("gem", "gemini-2.5-flash"),
    "mock": ("mock", "mock-1"),
    "emb": ("oai", "text-embedding-3-small"),
    "gem-emb": ("gem", "gemini-embedding-001"),
    "dalle": ("oai", "dall-e-3"),
    "azure-dalle": ("az", "dall-e-3"),
    "whisper": ("oai", "whisper-1"),
    "azure-whisper": ("az", "whisper-1"),
    "tts": ("oai", "tts-1"),
    "azure-tts": ("az", "tts-1"),
}
CHAT_MODELS = ["gpt", "azure-gpt", "claude", "gem"]


@dataclass
class Wired:
    gateway: Gateway
    fake: FakeProviders
    key: str
    key_id: str
    admin: AdminClient

    def client(self, **kwargs: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.gateway.url + "/v1", api_key=self.key, max_retries=0, **kwargs
        )

    @contextlib.asynccontextmanager
    async def stream(self, body: dict[str, Any]) -> AsyncIterator[httpx2.Response]:
        """POST /v1/chat/completions with this key, its response read as it arrives."""
        async with (
            httpx2.AsyncClient(base_url=self.gateway.url, timeout=30) as http,
            http.stream(
                "POST",
                "/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {self.key}"},
            ) as response,
        ):
            yield response


async def wire(gateway: Gateway, fake: FakeProviders, admin: AdminClient) -> Wired:
    base = fake.url
    await admin.create_provider(name="oai", type="openai", base_url=base + "/v1", api_key=API_KEY)
    await admin.create_provider(
        name="az",
        type="azure",
        base_url=base,
        api_key=API_KEY,
        options={"api_version": "2024-10-21"},
    )
    await admin.create_provider(name="ant", type="anthropic", base_url=base, api_key=API_KEY)
    await admin.create_provider(name="gem", type="gemini", base_url=base, api_key=API_KEY)
    await admin.create_provider(name="mock", type="mock")
    for name, (provider, model) in MODELS.items():
        await admin.create_model(name=name, deployments=[{"provider": provider, "model": model}])
    created = await admin.create_key(name="proxy-tests")
    return Wired(gateway, fake, created["key"], created["id"], admin)


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeProviders]:
    f = FakeProviders()
    await f.start()
    yield f
    await f.stop()


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    """An OTLP/HTTP receiver on loopback, for the spans a gateway exports."""
    r = OtlpReceiver()
    await r.start()
    yield r
    await r.stop()


WiredFactory = Callable[..., Awaitable[Wired]]


@pytest_asyncio.fixture
async def wired_with(
    start_gateway: GatewayFactory, fake: FakeProviders
) -> AsyncIterator[WiredFactory]:
    """``await wired_with(**settings)``: a gateway with those settings, wired to the fakes;
    its admin client stays open until the test ends."""
    admins: list[AdminClient] = []

    async def make(**settings: Any) -> Wired:
        gw = await start_gateway(**settings)
        admins.append(AdminClient(gw.url, MASTER_KEY))
        return await wire(gw, fake, admins[-1])

    yield make
    for admin in admins:
        await admin.aclose()


@pytest_asyncio.fixture
async def wired(wired_with: WiredFactory) -> Wired:
    """Memory store: most proxy tests are about the wire, not the store."""
    return await wired_with(retry_backoff=0.01)


@pytest_asyncio.fixture
async def wired_store(wired_with: WiredFactory, store: Store) -> Wired:
    """On both stores, for tests that check what was recorded."""
    return await wired_with(store=store, retry_backoff=0.01)
