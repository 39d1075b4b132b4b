"""``serve --workers N``: the real CLI as a process, its workers serving one port."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import openai
import pytest
import pytest_asyncio

from conduit_tornado import AdminClient
from conduit_tornado.admission.limits import Limiter
from conduit_tornado.core.errors import ApiError
from conduit_tornado.store import Store
from tests.conftest import MASTER_KEY, FakeClock, clear_of_minute_end
from tests.fakes.providers import FakeProviders
from tests.served import ROOT, Served, serve_fails

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def two(tmp_path: Path, fake: FakeProviders) -> AsyncIterator[Served]:
    served = await Served.start(tmp_path, "--workers", "2", fake_url=fake.url)
    yield served
    await served.stop()  # SIGTERM (killed, the supervisor would leave its metrics directory)


async def _new_key(served: Served, **limits: int) -> str:
    async with AdminClient(served.url, MASTER_KEY) as admin:
        return str((await admin.create_key(name="w", **limits))["key"])


def _fresh_connections() -> httpx.AsyncClient:
    """A client opening a connection per request: the kernel spreads connections (not
    requests) across the workers' sockets."""
    return httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0), timeout=60)


async def _pids_answering(url: str, tries: int) -> list[int]:
    async with _fresh_connections() as http:
        return [(await http.get(url + "/health/live")).json()["pid"] for _ in range(tries)]


async def test_two_workers_serve_from_two_pids_and_survive_a_killed_one(
    two: Served, fake: FakeProviders
) -> None:
    assert len(two.pids) == 2 and os.getpid() not in two.pids
    assert set(await _pids_answering(two.url, 40)) == set(two.pids)
    key = await _new_key(two)
    async with openai.AsyncOpenAI(
        base_url=two.url + "/v1", api_key=key, http_client=_fresh_connections()
    ) as client:

        async def chat() -> str:
            done = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
            return str(done.choices[0].message.content)

        assert await chat() == "Hello from the fake"
        killed, survivor = two.pids
        os.kill(killed, signal.SIGKILL)
        # Connections meant for the dead worker's socket wait in its backlog for the
        # worker started in its place: none is refused.
        answers = await asyncio.gather(*(chat() for _ in range(12)))
        assert answers == ["Hello from the fake"] * 12
    line = await two.wait_for_line(rf"worker \d \(pid {killed}\) ended \(killed by SIGKILL\)")
    assert "starting another" in line
    await two.wait_for_line(r"listening on \S+ \(store: ", count=3)  # its successor's
    answering = set(await _pids_answering(two.url, 40))
    assert killed not in answering and survivor in answering and len(answering) == 2
    assert await two.stop() == 0


async def test_sigterm_drains_the_workers_with_a_stream_in_flight(
    two: Served, fake: FakeProviders
) -> None:
    key = await _new_key(two)
    fake.then(chunk_delay=0.5)  # six events: about three seconds
    async with openai.AsyncOpenAI(base_url=two.url + "/v1", api_key=key) as client:
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = []
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text.append(chunk.choices[0].delta.content)
                if len(text) == 1:
                    two.process.send_signal(signal.SIGTERM)
    assert "".join(text) == "Hello from the fake"
    assert await asyncio.wait_for(two.process.wait(), 60) == 0
    log = two.log()
    assert "stopping: draining the workers" in log
    assert log.count("shutting down: finishing in-flight requests") == 2
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as http:
            await http.get(two.url + "/health/live")


async def test_rate_limits_and_parallel_slots_are_exact_across_workers(
    two: Served, fake: FakeProviders
) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    await clear_of_minute_end(10)
    rpm_key = await _new_key(two, rpm=10)
    async with _fresh_connections() as http:
        headers = {"Authorization": f"Bearer {rpm_key}"}
        burst = [
            http.post(two.url + "/v1/chat/completions", json=body, headers=headers)
            for _ in range(30)
        ]
        pids = _pids_answering(two.url, 20)  # both workers answer meanwhile
        *answers, answering = await asyncio.gather(*burst, pids)
    assert set(answering) == set(two.pids)
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] * 10 + [429] * 20, statuses

    for _ in range(8):
        fake.then(delay=2.0)  # each admitted request holds its slot for two seconds
    parallel_key = await _new_key(two, max_parallel=2)
    async with _fresh_connections() as http:
        headers = {"Authorization": f"Bearer {parallel_key}"}
        answers = await asyncio.gather(
            *(
                http.post(two.url + "/v1/chat/completions", json=body, headers=headers)
                for _ in range(8)
            )
        )
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] * 2 + [429] * 6, statuses
    assert await two.stop() == 0


async def test_workers_need_a_shared_store(tmp_path: Path) -> None:
    done = await serve_fails(tmp_path, "--workers", "2", "--store", "memory")
    assert done.returncode == 2
    assert done.stderr.startswith("error: the in-process store (CONDUIT_STORE=memory) is per")


async def test_one_master_key_is_generated_and_printed_for_all_workers(
    tmp_path: Path, fake: FakeProviders
) -> None:
    served = await Served.start(
        tmp_path, "--workers", "3", fake_url=fake.url, env={"CONDUIT_MASTER_KEY": ""}
    )
    try:
        await served.wait_for_line(r"condt_master_")
        printed = [line.strip() for line in served.lines if line.strip().startswith("condt_")]
        assert len(printed) == 1 and "Generated admin master key" in served.log()
        async with httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0)) as http:
            for _ in range(9):  # every worker knows the one key
                r = await http.get(
                    served.url + "/admin/v1/keys",
                    headers={"Authorization": f"Bearer {printed[0]}"},
                )
                assert r.status_code == 200
    finally:
        assert await served.stop() == 0
    assert served.log().count("Generated admin master key") == 1


async def test_slots_held_by_an_instance_started_since_the_last_heartbeat_count(
    store: Store,
) -> None:
    """Workers start together (and one restarted comes back) between two heartbeats of
    the others: the slots it takes meanwhile must count all the same."""
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    key = {"_id": "key_p", "name": "p", "created_at": clock.now(), "max_parallel": 2}
    await store.insert("keys", key)
    older = Limiter(store, clock, "inst_older")
    await older.heartbeat()  # knows of itself only
    newer = Limiter(store, clock, "inst_newer")
    await newer.heartbeat()
    held = [await newer.admit(key, "m", None, 0) for _ in range(2)]
    with pytest.raises(ApiError) as refused:
        await older.admit(key, "m", None, 0)
    assert refused.value.status == 429
    await newer.release(held[0])
    await newer.flush()
    await older.release(await older.admit(key, "m", None, 0))  # one freed: it fits
    # A holder that is gone (no fresh heartbeat) is not counted, and not looked for again.
    clock.advance(3600)
    await older.heartbeat()
    grants = [await older.admit(key, "m", None, 0) for _ in range(2)]
    assert "inst_newer" in older._holdings.gone
    for grant in grants:
        await older.release(grant)
    await older.close()
    await newer.close()


SUPERVISE = """
import logging, os, sys
from conduit_tornado.gateway import bind
from conduit_tornado.server.workers import Supervisor, bind_workers

logging.basicConfig(level=logging.INFO, format="%(message)s")
worker = sys.argv[1]
sets = bind_workers(bind, "127.0.0.1", 0, 2)
command = lambda fds, channel: [sys.executable, "-c", worker, str(channel)]
supervisor = Supervisor(command, sets, dict(os.environ), drain_seconds=5)
sys.exit(supervisor.run(lambda pids: print("all ready", flush=True)))
"""
REPORT_READY_THEN_CRASH = (
    "import socket, sys; socket.socket(fileno=int(sys.argv[1])).sendall(b'ready\\n'); sys.exit(1)"
)


async def _supervise(worker: str, run_for: float | None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SUPERVISE,
        worker,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    if run_for is not None:
        await asyncio.sleep(run_for)
        proc.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_a_worker_failing_to_start_stops_the_supervisor_with_its_status() -> None:
    status, log = await _supervise("import sys; sys.exit(3)", None)
    assert status == 3
    assert "failed to start (exit status 3): stopping" in log and "all ready" not in log


async def test_a_crash_loop_is_restarted_with_a_growing_backoff() -> None:
    status, log = await _supervise(REPORT_READY_THEN_CRASH, 6.0)
    assert status == 0 and "all ready" in log
    for slot in (0, 1):
        delays = re.findall(
            rf"worker {slot} \(pid \d+\) ended \(exit status 1\).* in ([\d.]+) s", log
        )
        # Started at 0 s, then after 0.5, 1, 2 (and on a quick machine 4) s of backoff (each
        # start takes a while): without the backoff it would have been started hundreds of
        # times.
        assert 2 <= len(delays) <= 4, log
        assert [float(d) for d in delays] == [0.5, 1.0, 2.0, 4.0][: len(delays)]


async def test_workers_stop_when_their_supervisor_is_killed(
    tmp_path: Path, fake: FakeProviders
) -> None:
    # A directory of the test's: the killed supervisor cannot remove one of its own.
    metrics = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    served = await Served.start(tmp_path, "--workers", "2", fake_url=fake.url, env=metrics)
    served.process.kill()
    await served.process.wait()
    # Their stderr is the supervisor's: it ends when the last of them has.
    await asyncio.wait_for(served.output_ended(), 60)
    assert served.log().count("the supervisor has gone: stopping") == 2
