"""Shared fixtures: the test MongoDB, both stores, and gateways on free loopback ports."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import sys
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from types import FrameType
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

import tests.fakes.sdk_types  # noqa: F401  (google-genai's models, built now for the same reason)

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


# Tests in files owned elsewhere whose own code blocks a gateway's event loop: each should
# move that work off the loop (and leave this list) or carry the marker itself.
KNOWN_BLOCKING = {
    "tests/test_realtime.py::test_openai_sdk_realtime_client": (
        "the openai SDK imports its realtime event types on first use, on the loop "
        "(~0.4 s of CPU); importing openai.types.realtime at the module's top would fix it"
    ),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="needs a genuine mongod: set CONDUIT_TEST_MONGODB_URI")
    for item in items:
        if not REAL_MONGO and "realmongo" in item.keywords:
            item.add_marker(skip)
        reason = KNOWN_BLOCKING.get(item.nodeid)
        if reason is not None:
            item.add_marker(pytest.mark.blocks_loop(reason=reason))


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
    if store_kind == "mongodb":
        collect_dropped_sockets()


def collect_dropped_sockets() -> None:
    """PyMongo's async monitor leaves the socket of a check cut short (a client closed while
    its monitor waits) to the garbage collector. Collect it where it was made, so its
    ResourceWarning (an error under filterwarnings) cannot land on whichever test runs
    next; our own leaks still fail the test that makes them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


GatewayFactory = Callable[..., Awaitable[Gateway]]

# -- loop-lag watchdog ---------------------------------------------------------------------

STALL_LIMIT = 0.1  # seconds one callback may keep the event loop from the others
BLOCKS_LOOP = "blocks_loop"
_HANDLE_RUN = asyncio.Handle._run.__code__


def _running_handle(frame: FrameType | None) -> FrameType | None:
    """The frame of the asyncio callback (Handle._run) a thread is inside, from its stack
    (None: between callbacks, or waiting for I/O in the selector). One callback's run
    keeps its frame, so the frame names the run. Only f_code and f_back are read: reading
    f_locals of another thread's frame crashed the interpreter (Python 3.11)."""
    while frame is not None:
        if frame.f_code is _HANDLE_RUN:
            return frame
        frame = frame.f_back
    return None


_THREAD_START = threading.Thread.start.__code__


def _starting_a_thread(frame: FrameType | None) -> bool:
    """asyncio's default executor starts its worker threads from the loop's thread and
    waits until each runs: a wait that grows with the machine's load, not with work."""
    while frame is not None:
        if frame.f_code is _THREAD_START:
            return True
        frame = frame.f_back
    return False


# CPU time the cyclic garbage collector took, per thread (and when a pass began). The test
# process's collector walks the heap the whole session built (hypothesis, schemathesis,
# SDK models): that is not the gateway's work, and the serving process tunes its own
# (cli.tune_gc), so the watchdog does not count it.
_GC_SPENT: dict[int, float] = {}
_GC_STARTED: dict[int, float] = {}


def _gc_clock(phase: str, info: dict[str, Any]) -> None:
    thread = threading.get_ident()
    if phase == "start":
        _GC_STARTED[thread] = time.thread_time()
    elif thread in _GC_STARTED:
        _GC_SPENT[thread] = (
            _GC_SPENT.get(thread, 0.0) + time.thread_time() - _GC_STARTED.pop(thread)
        )


gc.callbacks.append(_gc_clock)


class LoopWatchdog:
    """Records each callback that keeps ``loop`` from its other work for more than
    STALL_LIMIT, which a gateway must never do.

    A watcher thread looks at the loop's thread every PERIOD: which asyncio callback (Handle)
    it is inside. When the same callback is still running, it counts as a stall once it
    has used more than STALL_LIMIT of CPU (work on the loop), or kept the thread asleep for
    more than STALL_LIMIT of wall time (a blocking call: time.sleep, subprocess.run, sync
    I/O); the loop thread's stack is kept for the report. A loop that is busy with many
    short callbacks is not blocked, nor is one whose thread waits for a CPU taken by other
    processes: CPU time does not stretch when the machine is busy, wall time does. When
    the watcher itself wakes late (the whole process was held up), it measures wall time
    afresh, and time while the loop is not running at all (between pytest-asyncio's runs)
    has no callback to blame."""

    PERIOD = 0.01

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        limit: float = STALL_LIMIT,
    ) -> None:
        self.loop = loop
        self.limit = limit
        self.stalls: list[float] = []
        self.where: list[str] = []  # for each stall, the loop thread's stack
        self._thread: int | None = None
        self._clock = 0
        self._native = 0
        self._current: tuple[FrameType, float, float] | None = None
        self._reported: FrameType | None = None
        self._done = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)

    def start(self) -> None:
        """Start watching (from the loop's thread, or before the loop runs)."""
        if self._watcher.is_alive():
            return
        if self.loop.is_running():
            self._mark_thread()
        else:
            self.loop.call_soon(self._mark_thread)
        self._watcher.start()

    def _mark_thread(self) -> None:
        self._thread = threading.get_ident()
        self._clock = time.pthread_getcpuclockid(self._thread)
        self._native = threading.get_native_id()

    def stop(self) -> None:
        self._done.set()
        if self._watcher.is_alive():
            self._watcher.join(timeout=5)

    def _watch(self) -> None:
        while True:
            started = time.monotonic()
            if self._done.wait(self.PERIOD):
                return
            # Woken late, the process was held up: wall time since the last look says
            # nothing of the loop (CPU time still does).
            self._look(fresh_wall=time.monotonic() - started > 5 * self.PERIOD)

    def _look(self, fresh_wall: bool) -> None:
        thread = self._thread
        frame = sys._current_frames().get(thread) if thread is not None else None
        try:
            handle = _running_handle(frame) if self.loop.is_running() else None
        except AttributeError:
            # The loop's thread ran on while its stack was walked (this thread gives up the
            # GIL between bytecodes) and a link came back as something else: look again.
            handle = None
        if handle is None:
            self._current = None
            return
        now, cpu = time.monotonic(), time.clock_gettime(self._clock)
        collecting = _GC_STARTED.get(thread) if thread is not None else None
        cpu -= _GC_SPENT.get(thread or 0, 0.0) + (cpu - collecting if collecting else 0.0)
        if self._current is None or self._current[0] is not handle:
            self._current = (handle, now, cpu)
            return
        if fresh_wall:
            self._current = (handle, now, self._current[2])
        _, since, cpu_since = self._current
        held = round(max(now - since, cpu - cpu_since), 3)
        if handle is self._reported:
            self.stalls[-1] = held  # the same stall, still going
            return
        busy = cpu - cpu_since > self.limit
        try:
            asleep = (
                now - since > self.limit and not self._on_cpu() and not _starting_a_thread(frame)
            )
            stack = traceback.format_stack(frame)[-8:] if busy or asleep else []
        except AttributeError:  # as above: the stack changed under us
            return
        if busy or asleep:
            self._reported = handle
            self.stalls.append(held)
            self.where.append(("(on the CPU)\n" if busy else "(asleep)\n") + "".join(stack))

    def _on_cpu(self) -> bool:
        """Whether the loop's thread is running or waiting for a CPU (Linux), rather than
        asleep in a blocking call."""
        try:
            with open(f"/proc/self/task/{self._native}/stat", "rb") as stat:
                return stat.read().rpartition(b")")[2].split()[0] == b"R"
        except OSError:
            return False

    def verdict(self) -> str | None:
        """Why the test fails, or None."""
        if not self.stalls:
            return None
        worst = max(range(len(self.stalls)), key=self.stalls.__getitem__)
        return (
            f"the event loop running the gateway was blocked {len(self.stalls)} time(s) for "
            f"more than {self.limit * 1000:.0f} ms by one callback (worst "
            f"{self.stalls[worst] * 1000:.0f} ms): something in the test or the gateway did "
            f"not yield. A test that blocks on purpose says so with "
            f"@pytest.mark.{BLOCKS_LOOP}(reason=...). The loop's thread, in the worst "
            f"stall:\n{self.where[worst]}"
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
    if any(isinstance(gw._store, MongoStore) for gw in started):  # the store it was given
        collect_dropped_sockets()


@pytest_asyncio.fixture
async def gateway(start_gateway: GatewayFactory, store: Store) -> Gateway:
    """A gateway on each store (the test runs once per store)."""
    return await start_gateway(store=store)


@pytest_asyncio.fixture
async def admin(gateway: Gateway) -> AsyncIterator[AdminClient]:
    async with AdminClient(gateway.url, MASTER_KEY) as client:
        yield client


pytest_plugins = [
    "tests.proxy_setup",
    "tests.realtime_setup",
    "pytest_jupyter.jupyter_server",
    "pytester",
]


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
