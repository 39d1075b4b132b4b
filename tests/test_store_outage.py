"""A MongoDB that stops answering: requests that need it get a 503 they can retry, within
the store timeout, and the gateway recovers by itself when the server answers again."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest
import pytest_asyncio

from conduit_tornado import AdminClient
from conduit_tornado.store import MongoStore
from tests.conftest import MASTER_KEY, GatewayFactory, settled
from tests.fakes.providers import FakeProviders
from tests.proxy_setup import Wired, wire

pytestmark = pytest.mark.asyncio
CHAT = {"model": "gpt", "messages": [{"role": "user", "content": "Say hello"}]}


class Relay:
    """A TCP relay in front of the test database that can stop passing bytes, the way a
    server that hangs (or a network that drops packets) looks to the driver."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._open = asyncio.Event()
        self._open.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def pause(self) -> None:
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    async def close(self) -> None:
        """Go away: open connections are reset and new ones refused."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # A pipe cancelled before it first ran never reaches its finally: close both ends
        # here too (closing twice is harmless), or the sockets outlive the test.
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers.append(up_writer)
        for pipe in (self._pipe(reader, up_writer), self._pipe(up_reader, writer)):
            task = asyncio.create_task(pipe)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                await self._open.wait()  # paused: held here, as if the server never answered
                sink.write(data)
                await sink.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            sink.close()


@pytest.fixture(autouse=True)
def _collect_cut_driver_sockets() -> Iterator[None]:
    """PyMongo's async server monitor drops, without closing, the socket of a check that
    the relay cut by going away: the socket is garbage once the test's gateway is stopped.
    Collect it here, after each test of this module, where its ResourceWarning is
    expected, instead of in whichever later test the collector happens to run."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest_asyncio.fixture
async def relay(mongo_uri: str) -> AsyncIterator[tuple[Relay, str]]:
    parts = urlsplit(mongo_uri)
    assert parts.hostname is not None
    relay = Relay(parts.hostname, parts.port or 27017)
    port = await relay.start()
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{port}" if credentials else f"127.0.0.1:{port}"
    # directConnection: a replica set would otherwise lead the driver past the relay.
    yield relay, f"mongodb://{netloc}/?directConnection=true"
    await relay.close()


@contextlib.asynccontextmanager
async def behind(
    uri: str, fake: FakeProviders, start_gateway: GatewayFactory, **settings: Any
) -> AsyncIterator[tuple[Wired, httpx2.AsyncClient]]:
    """A gateway whose MongoDB is reached through the relay, with a 0.5 s store timeout,
    wired to the fake providers; and an HTTP client for it."""
    store = MongoStore(uri, "t_" + uuid.uuid4().hex[:16], timeout=0.5)
    gw = await start_gateway(store=store, retry_backoff=0.01, **settings)
    async with (
        AdminClient(gw.url, MASTER_KEY) as admin,
        httpx2.AsyncClient(base_url=gw.url, timeout=30) as http,
    ):
        yield await wire(gw, fake, admin), http


async def test_a_hung_store_answers_503_and_the_gateway_recovers(
    relay: tuple[Relay, str],
    fake: FakeProviders,
    start_gateway: GatewayFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    hold, uri = relay
    # Spend read on every request: a budgeted key needs the store even when it is cached.
    settings = {"spend_cache_ttl": 0, "key_cache_ttl": 0.2}
    async with behind(uri, fake, start_gateway, **settings) as (w, http):
        gw, admin = w.gateway, w.admin
        fresh = await admin.create_key(name="never used, so not cached")
        budgeted = await admin.create_key(name="budgeted", max_budget=100)
        as_fresh = {"Authorization": f"Bearer {fresh['key']}"}
        as_budgeted = {"Authorization": f"Bearer {budgeted['key']}"}
        as_admin = {"Authorization": f"Bearer {MASTER_KEY}"}
        answered = await http.post(
            "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {w.key}"}
        )
        assert answered.status_code == 200
        assert (await http.post("/v1/chat/completions", json=CHAT, headers=as_budgeted)).is_success

        hold.pause()
        caplog.clear()
        started = time.monotonic()
        refused = await http.post("/v1/chat/completions", json=CHAT, headers=as_fresh)
        took = time.monotonic() - started
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "store_unavailable"
        assert refused.json()["error"]["type"] == "service_unavailable"
        assert refused.headers["Retry-After"] == "1"
        assert took < 3  # the store timeout (0.5 s) bounds it, not the driver's defaults
        # A key read before the outage, with no limit to check, is served from memory even
        # once its cache time is over (the first refusal took longer than that).
        served = await http.post(
            "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {w.key}"}
        )
        assert served.status_code == 200, served.text
        over_budget_check = await http.post("/v1/chat/completions", json=CHAT, headers=as_budgeted)
        assert over_budget_check.status_code == 503
        assert over_budget_check.json()["error"]["code"] == "store_unavailable"
        started = time.monotonic()
        listing = await http.get("/admin/v1/keys", headers=as_admin)
        assert time.monotonic() - started < 0.3  # fails at once: known down a moment ago
        assert listing.status_code == 503 and listing.json()["error"]["code"] == "store_unavailable"
        assert (await http.get("/health/ready")).status_code == 503
        crashes = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
        assert not crashes  # an outage is a warning line, not a traceback per request

        hold.resume()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            again = await http.post("/v1/chat/completions", json=CHAT, headers=as_fresh)
            if again.status_code != 503:
                break
            await asyncio.sleep(0.1)
        assert again.status_code == 200, again.text
        assert (await http.get("/admin/v1/keys", headers=as_admin)).status_code == 200

        assert gw.ctx is not None
        await gw.ctx.recorder.flush()
        assert gw.ctx.recorder.pending == 0
        # Logs held back during the outage are written once it ends, each exactly once.
        # (A refusal at authentication has no key to log it under, like a 401.)
        logs = (await admin.logs(limit=100))["data"]
        assert sorted((entry["key_id"], entry["status"]) for entry in logs) == sorted(
            [(w.key_id, 200)] * 2
            + [(budgeted["id"], 200), (budgeted["id"], 503), (fresh["id"], 200)]
        )
        refusal = next(entry for entry in logs if entry["status"] == 503)
        assert refusal["error_code"] == "store_unavailable"
        await settled(gw)
        await gw.ctx.limiter.flush()
        view = await admin.get_key(budgeted["id"])
        assert view["spend"] > 0 and "settled" not in view  # the batch marks stay inside


async def test_a_store_that_went_away_answers_503(
    relay: tuple[Relay, str], fake: FakeProviders, start_gateway: GatewayFactory
) -> None:
    hold, uri = relay
    async with behind(uri, fake, start_gateway) as (w, http):
        fresh = await w.admin.create_key(name="never used, so not cached")
        await hold.close()  # connections reset, new ones refused
        started = time.monotonic()
        r = await http.post(
            "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {fresh['key']}"}
        )
        assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable"
        assert time.monotonic() - started < 3


async def test_stopping_during_an_outage_takes_one_timeout_per_kind_of_write(
    relay: tuple[Relay, str], fake: FakeProviders, start_gateway: GatewayFactory
) -> None:
    """Logs, rollups and settlements for many keys wait on a hung store at shutdown: each
    kind of write finds the store down once, not once per key, and the rest is given up
    (logged), so stopping stays bounded."""
    hold, uri = relay
    async with behind(uri, fake, start_gateway) as (w, http):
        gw, admin = w.gateway, w.admin
        keys = [await admin.create_key(name=f"k{i}", max_budget=10) for i in range(8)]
        for key in keys:  # a key's first request reads it from the store: before the outage
            auth = {"Authorization": f"Bearer {key['key']}"}
            assert (await http.post("/v1/chat/completions", json=CHAT, headers=auth)).is_success
        assert gw.ctx is not None
        await gw.ctx.recorder.flush()
        await settled(gw)
        await gw.ctx.limiter.flush()
        hold.pause()
        for key in keys:  # served from memory: new logs, rollups and charges for each key
            auth = {"Authorization": f"Bearer {key['key']}"}
            assert (await http.post("/v1/chat/completions", json=CHAT, headers=auth)).is_success
    started = time.monotonic()
    await gw.stop()
    assert time.monotonic() - started < 5  # 8 keys x (rollup + charge) x 0.5 s would be 8
