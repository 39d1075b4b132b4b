"""Shared fixtures: the test MongoDB, both stores, and gateways on free loopback ports."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio

from conduit_tornado import AdminClient, Gateway, Settings
from conduit_tornado.core.clock import Clock
from conduit_tornado.store import MemoryStore, MongoStore, Store
from tests.mongo_server import JongoServer, jongodb_binary

MASTER_KEY = "condt_master_test_" + "x" * 24
REAL_MONGO = bool(os.environ.get("CONDUIT_TEST_MONGODB_URI"))


class FakeClock(Clock):
    """A clock tests move by hand: window rollovers without sleeping."""

    def __init__(self, now: datetime) -> None:
        self._now = now
        self._mono = 1000.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._mono += seconds


_HELD_PORTS: list[socket.socket] = []


def free_port() -> int:
    """A loopback port that stays ours for the rest of the session.

    The port is taken by binding port 0 and the socket is kept bound (not listening), so
    neither another bind(0) nor an outgoing connection can be given it meanwhile. Binding
    it again with SO_REUSEADDR, as Tornado, the gateway, jongodb and Jupyter do, succeeds
    on Linux while no socket listens on it; a plain bind is refused, and a connection to
    it is refused until the server listens."""
    held = socket.socket()
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    held.bind(("127.0.0.1", 0))
    _HELD_PORTS.append(held)
    port: int = held.getsockname()[1]
    return port


def pytest_unconfigure(config: pytest.Config) -> None:
    while _HELD_PORTS:
        _HELD_PORTS.pop().close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if REAL_MONGO:
        return
    skip = pytest.mark.skip(reason="needs a genuine mongod: set CONDUIT_TEST_MONGODB_URI")
    for item in items:
        if "realmongo" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def mongo_uri() -> Iterator[str]:
    if REAL_MONGO:
        yield os.environ["CONDUIT_TEST_MONGODB_URI"]
        return
    server = JongoServer(jongodb_binary(), free_port())
    yield server.uri
    server.stop()


def new_mongo_store(uri: str) -> MongoStore:
    # A database per test: jongodb cannot drop, and isolation keeps collections small.
    return MongoStore(uri, "t_" + uuid.uuid4().hex[:16])


@pytest.fixture(autouse=True)
def _data_dir(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A gateway started with no store (a notebook, the Jupyter extension, `serve`) opens
    the local store in CONDUIT_DATA_DIR: a fresh one per test, never the user's own."""
    monkeypatch.setenv("CONDUIT_DATA_DIR", str(tmp_path / "conduit-data"))


@pytest.fixture(params=["memory", "sqlite", "mongodb"])
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest_asyncio.fixture
async def store(store_kind: str, request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    from conduit_tornado.store import SQLiteStore

    s: Store = (
        MemoryStore()
        if store_kind == "memory"
        else SQLiteStore(request.getfixturevalue("tmp_path") / "store.sqlite3")
        if store_kind == "sqlite"
        else new_mongo_store(request.getfixturevalue("mongo_uri"))
    )
    await s.start()
    yield s
    await s.close()


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest_asyncio.fixture
async def start_gateway() -> AsyncIterator[GatewayFactory]:
    """Start gateways on free ports: ``await start_gateway(store=..., **settings)``."""
    started: list[Gateway] = []

    async def start(
        store: Store | None = None, clock: Clock | None = None, **overrides: Any
    ) -> Gateway:
        fields: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "master_key": MASTER_KEY}
        fields.update(overrides)
        gw = Gateway(Settings(**fields), store=store or MemoryStore(), clock=clock)
        await gw.start()
        started.append(gw)
        return gw

    yield start
    for gw in started:
        await gw.stop()


@pytest_asyncio.fixture
async def gateway(start_gateway: GatewayFactory, store: Store) -> Gateway:
    """A gateway on each store (the test runs once per store)."""
    return await start_gateway(store=store)


@pytest_asyncio.fixture
async def admin(gateway: Gateway) -> AsyncIterator[AdminClient]:
    async with AdminClient(gateway.url, MASTER_KEY) as client:
        yield client


pytest_plugins = ["tests.proxy_setup", "pytest_jupyter.jupyter_server"]


async def clear_of_minute_end(needed: float = 3.0) -> None:
    """For tests of per-minute limits on a real clock: start where the next ``needed``
    seconds stay inside one calendar minute, since a new minute rightly opens a new window."""
    now = datetime.now(UTC)
    second = now.second + now.microsecond / 1e6
    if second > 60 - needed:
        await asyncio.sleep(60.2 - second)


async def settled(gw: Gateway) -> None:
    """Wait for the gateway's after-response work (limit settlement, spend, alerts).

    It is spawned inside finish(), before the response reaches the client, so a test
    holding a response can wait for exactly that instead of sleeping."""
    assert gw.ctx is not None
    while True:
        await gw.ctx.in_flight.settle()
        await gw.ctx.limiter.flush()  # settlements are written behind
        if not gw.ctx.in_flight.background:
            return
