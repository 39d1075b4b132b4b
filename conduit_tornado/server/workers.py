"""Serving on every core (``serve --workers N``): a supervisor process and N workers.

Each worker is a fresh process running the same CLI (not a fork of one that has already
imported the gateway: prometheus-client chooses its multiprocess storage at import, from
PROMETHEUS_MULTIPROC_DIR, and every library's threads and clients start clean), with its
own event loop, store client, provider clients and limiter instance. Limits, budgets and
parallel slots are shared through the store exactly as between separate instances.

Listening. The supervisor binds the sockets and hands them down (pass_fds), so port 0
works and a restarted worker takes over the very socket its predecessor listened on. On
Linux every worker slot has sockets of its own, all bound to the one port with
SO_REUSEPORT, and the kernel spreads new connections across them; a single shared socket
would let whichever worker wakes first accept a whole burst of connections. The
supervisor keeps its copies open, so connections that reach a slot while its worker is
being restarted wait in that socket's backlog instead of being refused. Elsewhere all
workers share one set of sockets.

Lifecycle. A worker reports ready over a socket pair once it listens; it stops (draining)
if the supervisor goes away, seen as the end of that pair. A worker that dies is started
again, at once if it had run a while, else after a backoff doubling up to
MAX_BACKOFF_SECONDS, so a crash loop does not spin. A worker that fails before the first
start of all of them has completed (a bad config, an unreachable store) ends the
supervisor with its exit status instead. SIGTERM or SIGINT closes the supervisor's copies
of the sockets and passes SIGTERM to every worker, which stops accepting and lets its
requests and streams finish (CONDUIT_SHUTDOWN_TIMEOUT); the supervisor exits once they
all have, killing any still there after that timeout and a grace period. A second signal
kills them at once.

Cores. With ``affinity`` (CONDUIT_WORKER_AFFINITY) each worker slot is held to one of the
cores the supervisor may run on, in turn, with every thread of the worker (its event
loop, the provider client's runtime thread, the local store's thread): the threads of a
worker then hand work to each other on one core instead of waking another, and no worker
migrates. A held worker cannot move away from another busy process on its core, though,
so it is off by default.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

log = logging.getLogger("conduit.workers")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
READY = b"ready\n"
STABLE_SECONDS = 30.0  # a worker that ran this long is restarted at once when it dies
FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 10.0
STOP_GRACE_SECONDS = 10.0  # past the drain: flushing logs and usage, closing clients
POLL_SECONDS = 0.25

# Given a worker's listening descriptors and its end of the supervisor's socket pair,
# the command that starts it.
Command = Callable[[list[int], int], list[str]]
Bind = Callable[[str, int, bool], list[socket.socket]]


def worker_count(setting: int | str) -> int:
    """CONDUIT_WORKERS as a number: auto is the cores this process may run on."""
    if setting != "auto":
        return int(setting)
    if hasattr(os, "sched_getaffinity"):  # a container's cpuset, or taskset, counts
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def spread_by_kernel() -> bool:
    """Whether sockets bound with SO_REUSEPORT share out connections (Linux; BSD's
    SO_REUSEPORT only lets the last socket bound have them)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def bind_workers(bind: Bind, host: str, port: int, count: int) -> list[list[socket.socket]]:
    """The listening sockets of each worker slot (see the module's docstring)."""
    if not spread_by_kernel():
        return [bind(host, port, False)] * count
    if port != 0:
        # Sockets with SO_REUSEPORT may join a port another process of this user is
        # already listening on with it (a gateway started twice): make sure it is free.
        bind(host, port, False)[0].close()
    sets: list[list[socket.socket]] = []
    try:
        for _ in range(count):
            sets.append(bind(host, port, True))
            port = sets[0][0].getsockname()[1]  # port 0: every slot on the one chosen
    except OSError:
        for sockets in sets:
            for sock in sockets:
                sock.close()
        raise
    return sets


def allowed_cores() -> list[int]:
    """The cores this process may run on, in order (none where that cannot be set)."""
    if not hasattr(os, "sched_setaffinity"):
        return []
    return sorted(os.sched_getaffinity(0))


def hold_to_core(pid: int, core: int) -> None:
    """Hold a process just started to one core, every thread it has so far (threads it
    starts later inherit it). Called right after the start, while the new interpreter is
    still importing, before the worker has started threads of its own; a thread that
    escaped is only slower, not wrong."""
    try:
        threads = [int(task) for task in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        threads = [pid]
    for thread in threads:
        with contextlib.suppress(OSError):  # gone already: the exit is handled as usual
            os.sched_setaffinity(thread, {core})


def inherited_sockets(fds: str) -> list[socket.socket]:
    """A worker's listening sockets, from the descriptors its supervisor passed down."""
    return [socket.socket(fileno=int(fd)) for fd in fds.split(",") if fd]


class WorkerChannel:
    """A worker's end of the socket pair its supervisor holds the other end of."""

    def __init__(self, fd: int) -> None:
        self.sock = socket.socket(fileno=fd)

    def ready(self) -> None:
        self.sock.sendall(READY)

    def watch(self, on_lost: Callable[[], None]) -> None:
        """Call ``on_lost`` once the supervisor has gone (its end is closed)."""
        import asyncio

        loop = asyncio.get_running_loop()
        self.sock.setblocking(False)

        def readable() -> None:
            try:
                data = self.sock.recv(64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(self.sock.fileno())
                log.warning("the supervisor has gone: stopping")
                on_lost()

        loop.add_reader(self.sock.fileno(), readable)


@dataclass
class _Slot:
    index: int
    sockets: list[socket.socket]
    process: subprocess.Popen[bytes] | None = None
    channel: socket.socket | None = None  # the supervisor's end of the pair
    started: float = 0.0
    ready: bool = False
    failures: int = 0  # consecutive deaths of workers that had not run STABLE_SECONDS
    restart_at: float | None = None


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class Supervisor:
    """Starts ``count`` workers and keeps them running until SIGTERM or SIGINT."""

    def __init__(
        self,
        command: Command,
        socket_sets: list[list[socket.socket]],
        env: Mapping[str, str],
        drain_seconds: float,
        affinity: bool = False,
    ) -> None:
        self.command = command
        self.cores = allowed_cores() if affinity else []
        self.slots = [_Slot(i, sockets) for i, sockets in enumerate(socket_sets)]
        self.env = dict(env)
        self.drain_seconds = drain_seconds
        self.metrics_dir, self._own_metrics_dir = self._prepare_metrics_dir(env.get(MULTIPROC_ENV))
        self.env[MULTIPROC_ENV] = str(self.metrics_dir)
        self._selector = selectors.DefaultSelector()
        self._signals = 0
        self._stop_deadline: float | None = None
        self._all_started = False
        self._failed: int | None = None  # exit status of a worker that failed to start
        self._killed = False

    # -- metrics directory (prometheus-client multiprocess mode) ---------------------------

    @staticmethod
    def _prepare_metrics_dir(given: str | None) -> tuple[Path, bool]:
        """The user's PROMETHEUS_MULTIPROC_DIR, emptied of a previous run's files, else a
        directory of our own, removed at exit."""
        if given:
            path = Path(given)
            path.mkdir(parents=True, exist_ok=True)
            for stale in path.glob("*.db"):
                stale.unlink(missing_ok=True)
            return path, False
        return Path(tempfile.mkdtemp(prefix="conduit-metrics-")), True

    def _mark_dead(self, pid: int) -> None:
        """Drop a dead worker's live gauges (in-flight counts); its counters stay summed."""
        try:
            from prometheus_client import multiprocess
        except ImportError:  # nothing to account for
            return
        multiprocess.mark_process_dead(pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]

    # -- running ---------------------------------------------------------------------------

    def run(self, on_ready: Callable[[list[int]], None]) -> int:
        """Serve until stopped; ``on_ready`` gets the workers' pids once all first listen.
        Returns the exit status for the supervisor's process."""
        wake_read, wake_write = socket.socketpair()
        wake_read.setblocking(False)
        wake_write.setblocking(False)
        self._selector.register(wake_read, selectors.EVENT_READ, None)
        previous_wakeup = signal.set_wakeup_fd(wake_write.fileno(), warn_on_full_buffer=False)
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for slot in self.slots:
                self._spawn(slot)
            while self._step(on_ready):
                pass
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for slot in self.slots:  # only after an exception: workers left behind
                if slot.process is not None and slot.process.poll() is None:
                    slot.process.kill()
                    slot.process.wait()
            self._close_sockets()
            self._selector.close()
            wake_read.close()
            wake_write.close()
            if self._own_metrics_dir:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)
        if self._failed is not None:
            return self._failed
        return 1 if self._killed else 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1

    def _step(self, on_ready: Callable[[list[int]], None]) -> bool:
        """One turn of the supervisor's loop; False once every worker has ended."""
        for key, _ in self._selector.select(POLL_SECONDS):
            if key.data is None:
                with contextlib.suppress(OSError):
                    key.fileobj.recv(64)  # type: ignore[union-attr]  # the signals' wake-up
            else:
                self._read_channel(key.data)
        if self._signals and self._stop_deadline is None:
            self._begin_stop("stopping: draining the workers")
        elif self._signals > 1 and not self._killed:
            self._kill_all("a second signal: killing the workers")
        now = time.monotonic()
        for slot in self.slots:
            process = slot.process
            if process is not None and process.poll() is not None:
                self._exited(slot, process.returncode, now)
        if self._stop_deadline is not None:
            if now > self._stop_deadline and not self._killed:
                self._kill_all(
                    f"workers still running {self.drain_seconds + STOP_GRACE_SECONDS:g} s "
                    "after SIGTERM: killing them"
                )
            return any(slot.process is not None for slot in self.slots)
        for slot in self.slots:
            if slot.process is None and slot.restart_at is not None and now >= slot.restart_at:
                self._spawn(slot)
        if not self._all_started and all(slot.ready for slot in self.slots):
            self._all_started = True
            on_ready([s.process.pid for s in self.slots if s.process is not None])
        return True

    def _spawn(self, slot: _Slot) -> None:
        ours, theirs = socket.socketpair()
        fds = [sock.fileno() for sock in slot.sockets]
        try:
            slot.process = subprocess.Popen(  # noqa: S603 (our own CLI, argv built by us)
                self.command(fds, theirs.fileno()),
                env=self.env,
                pass_fds=[*fds, theirs.fileno()],
                stdin=subprocess.DEVNULL,
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        if self.cores:
            hold_to_core(slot.process.pid, self.cores[slot.index % len(self.cores)])
        ours.setblocking(False)
        slot.channel = ours
        slot.started = time.monotonic()
        slot.ready = False
        slot.restart_at = None
        self._selector.register(ours, selectors.EVENT_READ, slot)
        log.debug("worker %d started (pid %d)", slot.index, slot.process.pid)

    def _read_channel(self, slot: _Slot) -> None:
        channel = slot.channel
        if channel is None:
            return
        try:
            data = channel.recv(64)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if READY.strip() in data:
            slot.ready = True
        if not data:  # the worker is exiting; poll() tells when it has
            self._close_channel(slot)

    def _close_channel(self, slot: _Slot) -> None:
        if slot.channel is not None:
            self._selector.unregister(slot.channel)
            slot.channel.close()
            slot.channel = None

    def _exited(self, slot: _Slot, code: int, now: float) -> None:
        assert slot.process is not None
        pid = slot.process.pid
        slot.process = None
        self._close_channel(slot)
        self._mark_dead(pid)
        if self._stop_deadline is not None:
            if code != 0:
                log.warning("worker %d (pid %d) ended: %s", slot.index, pid, describe_exit(code))
            return
        if not self._all_started and not slot.ready:
            log.error(
                "worker %d (pid %d) failed to start (%s): stopping",
                slot.index,
                pid,
                describe_exit(code),
            )
            self._failed = code if code > 0 else 1
            self._begin_stop(None)
            return
        lived = now - slot.started
        slot.failures = 0 if lived >= STABLE_SECONDS else slot.failures + 1
        delay = (
            0.0
            if slot.failures == 0
            else min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2 ** (slot.failures - 1))
        )
        slot.restart_at = now + delay
        log.warning(
            "worker %d (pid %d) ended (%s) after %.1f s; starting another in %g s",
            slot.index,
            pid,
            describe_exit(code),
            lived,
            delay,
        )

    def _begin_stop(self, message: str | None) -> None:
        if message:
            log.info(message)
        self._stop_deadline = time.monotonic() + self.drain_seconds + STOP_GRACE_SECONDS
        # Our copies closed, each socket closes once its worker stops listening.
        self._close_sockets()
        for slot in self.slots:
            slot.restart_at = None
            if slot.process is not None and slot.process.poll() is None:
                slot.process.send_signal(signal.SIGTERM)

    def _kill_all(self, message: str) -> None:
        log.error(message)
        self._killed = True
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is None:
                slot.process.kill()

    def _close_sockets(self) -> None:
        for slot in self.slots:
            for sock in slot.sockets:
                sock.close()
