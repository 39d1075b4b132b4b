"""Shared fixtures: the test MongoDB, both stores, and gateways on free loopback ports."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import threading
import time
import traceback
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

# The openai and anthropic SDKs build each pydantic model on its first use unless told
# not to. That first use would come inside a test, on the event loop the gateway shares,
# and the loop-lag watchdog would blame the gateway for the SDK's 100+ ms of work: build
# the models when the SDKs' types are imported, here, before any loop runs.
os.environ.setdefault("DEFER_PYDANTIC_BUILD", "false")
import anthropic.types  # noqa: F401
import openai.types.chat
import openai.types.conversations
import openai.types.realtime
import openai.types.responses  # noqa: F401

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

# -- loop-lag watchdog ---------------------------------------------------------------------

STALL_LIMIT = 0.1  # seconds the event loop may go without running its callbacks
BLOCKS_LOOP = "blocks_loop"


class _Reference(threading.Thread):
    """A thread that only sleeps, and looks at the loop each time it wakes on time (when
    it wakes late too, the whole process was held up: a busy machine, a paused VM)."""

    PERIOD = 0.01

    def __init__(self, peek: Callable[[], None]) -> None:
        super().__init__(name="loop-watchdog-reference", daemon=True)
        self.done = threading.Event()
        self.peek = peek

    def run(self) -> None:
        while True:
            start = time.monotonic()
            if self.done.wait(self.PERIOD):
                return
            if time.monotonic() - start < 5 * self.PERIOD:
                self.peek()


class LoopWatchdog:
    """Records each time ``loop`` could not run a callback for more than STALL_LIMIT.

    A callback re-armed every TICK notes how late it runs. Lateness is time the loop spent
    in some other callback without yielding, which a gateway must never do. It counts as a
    stall when the loop's thread spent more than STALL_LIMIT of CPU meanwhile (work on the
    loop), or when a reference thread, itself on time, saw the running loop overdue by more
    than STALL_LIMIT with its thread asleep (a blocking call: time.sleep, subprocess.run,
    sync I/O); that thread also notes the loop thread's stack for the report. Other lateness is the machine's
    (other processes taking the CPU, a paused VM) and is kept apart in ``held_up``: CPU
    time does not stretch when the machine is busy, wall time does. Time while the loop is
    not running at all (pytest-asyncio runs fixtures and the test body as separate
    run_until_complete calls, with sync code between) is not lateness: the loop's
    run_forever is wrapped on this instance to restart the clock."""

    TICK = 0.02

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        limit: float = STALL_LIMIT,
        *,
        busy_neighbour: bool = False,
    ) -> None:
        self.loop = loop
        self.limit = limit
        # A loop on a thread beside a busy client thread (schemathesis) waits for the GIL
        # in a way that looks like a blocking call: count only lateness it spent working.
        self.busy_neighbour = busy_neighbour
        self.stalls: list[float] = []
        self.held_up: list[float] = []
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._cpu = 0.0
        self._original_run = loop.run_forever
        self._wrapper: Callable[[], None] | None = None
        self._reference = _Reference(self._peek)
        self._thread: int | None = None
        self._native = 0
        self._seen: tuple[float, str] = (0.0, "")
        self.where: list[str] = []  # for each stall, where the loop's thread was

    def start(self) -> None:
        """Start watching; call from the loop's thread or before the loop runs."""
        if self._handle is not None:
            return
        original = self._original_run

        def run_forever() -> None:
            self._mark_thread()
            self._due = self.loop.time() + self.TICK
            original()

        self._wrapper = run_forever
        self.loop.run_forever = run_forever  # type: ignore[method-assign]
        if self.loop.is_running():
            self._mark_thread()
        self._reference.start()
        self._due = self.loop.time() + self.TICK
        self._handle = self.loop.call_at(self._due, self._tick)

    def _mark_thread(self) -> None:
        """Called on the loop's thread: measure that thread from here on."""
        self._cpu = time.thread_time()
        self._thread = threading.get_ident()
        self._native = threading.get_native_id()

    def _peek(self) -> None:
        """From the reference thread, on time itself: the loop is running and its tick is
        overdue by more than the limit. Note what the loop's thread is doing (once per
        overdue tick), so a failure says where the loop was stuck."""
        due, thread = self._due, self._thread
        if thread is None or self._seen[0] == due or not self.loop.is_running():
            return
        if time.monotonic() - due > self.limit and not self._on_cpu():
            frame = sys._current_frames().get(thread)
            stack = traceback.format_stack(frame)[-8:] if frame is not None else []
            self._seen = (due, "".join(stack))

    def _on_cpu(self) -> bool:
        """Whether the loop's thread is running or waiting for a CPU, rather than asleep in
        a blocking call. Work on the CPU is judged by the CPU time it takes (wall time
        stretches when other processes share the CPUs)."""
        try:
            with open(f"/proc/self/task/{self._native}/stat", "rb") as stat:
                return stat.read().rpartition(b")")[2].split()[0] == b"R"
        except OSError:
            return False  # not Linux: any overdue loop counts

    def _tick(self) -> None:
        now = self.loop.time()
        cpu = time.thread_time()
        late = now - self._due
        if late > self.limit:
            worked = cpu - self._cpu > self.limit  # the loop's own thread was busy
            seen = self._seen[0] == self._due  # or stuck, seen from the reference thread
            if worked or (seen and not self.busy_neighbour):
                self.stalls.append(round(late, 3))
                self.where.append(self._seen[1] if seen else "(busy on the CPU)")
            else:
                self.held_up.append(round(late, 3))
        self._cpu = cpu
        self._due = now + self.TICK
        self._handle = self.loop.call_at(self._due, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._reference.done.set()
        if vars(self.loop).get("run_forever") is self._wrapper:
            del self.loop.run_forever  # the class's own again

    def verdict(self) -> str | None:
        """Why the test fails, or None."""
        if not self.stalls:
            return None
        worst = max(range(len(self.stalls)), key=self.stalls.__getitem__)
        return (
            f"the event loop running the gateway was blocked {len(self.stalls)} time(s) for "
            f"more than {self.limit * 1000:.0f} ms (worst {self.stalls[worst] * 1000:.0f} ms): "
            f"something in the test or the gateway did not yield. A test that blocks on "
            f"purpose says so with @pytest.mark.{BLOCKS_LOOP}(reason=...). The loop's thread, "
            f"seen during the worst stall:\n{self.where[worst] or '(not seen)'}"
        )


class LoopWatch:
    """The per-test holder: start_gateway starts a watchdog on the loop gateways run on."""

    def __init__(self) -> None:
        self.watchdog: LoopWatchdog | None = None

    def watch(self, loop: asyncio.AbstractEventLoop) -> LoopWatchdog:
        if self.watchdog is None or self.watchdog.loop is not loop:
            if self.watchdog is not None:
                self.watchdog.stop()
            self.watchdog = LoopWatchdog(loop)
            self.watchdog.start()
        return self.watchdog


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{BLOCKS_LOOP}(reason): the test blocks the event loop a gateway runs on, on purpose "
        "(the loop-lag watchdog in tests/conftest.py then records but does not fail)",
    )


@pytest.fixture(autouse=True)
def loop_watch(request: pytest.FixtureRequest) -> Iterator[LoopWatch]:
    """Fails a test during which a gateway's event loop was blocked > STALL_LIMIT."""
    holder = LoopWatch()
    yield holder
    if holder.watchdog is None:
        return
    holder.watchdog.stop()
    verdict = holder.watchdog.verdict()
    if verdict is not None and request.node.get_closest_marker(BLOCKS_LOOP) is None:
        pytest.fail(verdict, pytrace=False)


@pytest_asyncio.fixture
async def start_gateway(loop_watch: LoopWatch) -> AsyncIterator[GatewayFactory]:
    """Start gateways on free ports: ``await start_gateway(store=..., **settings)``."""
    started: list[Gateway] = []
    loop_watch.watch(asyncio.get_running_loop())

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


pytest_plugins = ["tests.proxy_setup", "pytest_jupyter.jupyter_server", "pytester"]


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
