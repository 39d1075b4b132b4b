"""CONDUIT_WORKER_AFFINITY: each worker of ``serve --workers N``, every thread of it, held
to one core of those the supervisor may run on, a restarted worker to its slot's core."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from conduit_tornado import AdminClient
from tests.conftest import MASTER_KEY
from tests.fakes.providers import FakeProviders
from tests.served import Served

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="cores are set through Linux's /proc"
    ),
]


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeProviders]:
    provider = FakeProviders()
    await provider.start()
    yield provider
    await provider.stop()


def _cores_of_threads(pid: int) -> list[set[int]]:
    return [os.sched_getaffinity(int(task)) for task in os.listdir(f"/proc/{pid}/task")]


async def _chat_on_every_worker(served: Served, pids: list[int]) -> None:
    """Chat requests until each worker has answered one: its provider client and store
    threads exist by then."""
    async with AdminClient(served.url, MASTER_KEY) as admin:
        key = (await admin.create_key(name="a"))["key"]
    seen: set[int] = set()
    # A connection per request: the kernel spreads connections across the workers.
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=60) as http:
        for _ in range(200):
            answer = await http.post(
                served.url + "/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert answer.status_code == 200, answer.text
            seen.add((await http.get(served.url + "/health/live")).json()["pid"])
            if seen >= set(pids):
                return
    raise AssertionError(f"workers {set(pids) - seen} never answered")


async def test_each_worker_and_all_its_threads_are_held_to_one_core(
    tmp_path: Path, fake: FakeProviders
) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    served = await Served.start(
        tmp_path, "--workers", "2", fake_url=fake.url, env={"CONDUIT_WORKER_AFFINITY": "true"}
    )
    try:
        await _chat_on_every_worker(served, served.pids)
        held = []
        for pid in served.pids:
            cores = _cores_of_threads(pid)
            assert len(cores) > 1  # the event loop's thread and the ones it started
            assert all(len(c) == 1 for c in cores) and len({min(c) for c in cores}) == 1, cores
            held.append(min(cores[0]))
        # In turn over the cores the supervisor may use: one worker a core when there are two.
        assert sorted(held) == sorted(allowed[i % len(allowed)] for i in range(2))
        # A worker started in place of one that died is held to the same core.
        killed = served.pids[0]
        os.kill(killed, signal.SIGKILL)
        line = await served.wait_for_line(rf"worker (\d) \(pid {killed}\) ended")
        await served.wait_for_line(r"listening on \S+ \(store: ", count=3)  # its successor's
        slot = int(line.split("worker ", 1)[1].split(" ", 1)[0])
        (successor,) = set(_children(served.process.pid)) - {served.pids[1]}
        assert {frozenset(c) for c in _cores_of_threads(successor)} == {
            frozenset({allowed[slot % len(allowed)]})
        }
        assert await served.stop() == 0
    finally:
        await served.kill()


async def test_workers_are_not_held_unless_asked(tmp_path: Path, fake: FakeProviders) -> None:
    allowed = os.sched_getaffinity(0)
    served = await Served.start(tmp_path, "--workers", "2", fake_url=fake.url)
    try:
        await _chat_on_every_worker(served, served.pids)
        for pid in served.pids:
            assert all(cores == allowed for cores in _cores_of_threads(pid))
        assert await served.stop() == 0
    finally:
        await served.kill()


def _children(parent: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # ended meanwhile
            if ppid == parent:
                children.append(int(entry))
    return children
