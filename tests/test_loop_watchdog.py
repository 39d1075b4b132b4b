"""The loop-lag watchdog of tests/conftest.py can fail: a loop blocked 200 ms inside a
gateway's request path or a loop callback is recorded, and a test that does so without
saying it blocks on purpose is reported as failed."""

from __future__ import annotations

import asyncio
import logging
import textwrap
import time
from pathlib import Path

import httpx2
import pytest

from tests.conftest import BLOCKS_LOOP, GatewayFactory, LoopWatch, LoopWatchdog

ROOT = Path(__file__).resolve().parent.parent


class _BlockingLog(logging.Handler):
    """Runs inside the gateway's request path (its access log line, written in finish())."""

    def emit(self, record: logging.LogRecord) -> None:
        if "/health/live?block" in record.getMessage():
            time.sleep(0.2)  # the blocking call under test


@pytest.mark.asyncio
@pytest.mark.blocks_loop(reason="blocks the loop 200 ms to prove the watchdog sees it")
async def test_a_handler_blocking_the_loop_is_recorded(
    start_gateway: GatewayFactory, loop_watch: LoopWatch
) -> None:
    gw = await start_gateway()
    access = logging.getLogger("conduit.access")
    blocker, level = _BlockingLog(), access.level
    access.addHandler(blocker)
    access.setLevel(logging.INFO)
    try:
        async with httpx2.AsyncClient(base_url=gw.url) as http:
            assert (await http.get("/health/live")).status_code == 200
            assert loop_watch.watchdog is not None and loop_watch.watchdog.stalls == []
            assert (await http.get("/health/live?block=1")).status_code == 200
    finally:
        access.removeHandler(blocker)
        access.setLevel(level)
    watchdog = loop_watch.watchdog
    assert len(watchdog.stalls) == 1 and 0.15 < watchdog.stalls[0] < 1.0, watchdog.stalls
    verdict = watchdog.verdict() or ""
    assert "blocked 1 time(s)" in verdict and "in emit" in verdict and "(asleep)" in verdict


@pytest.mark.asyncio
@pytest.mark.blocks_loop(reason="blocks the loop 200 ms to prove the watchdog sees it")
async def test_a_blocking_loop_callback_is_recorded(
    start_gateway: GatewayFactory, loop_watch: LoopWatch
) -> None:
    await start_gateway()
    asyncio.get_running_loop().call_soon(time.sleep, 0.2)
    await asyncio.sleep(0.3)
    assert loop_watch.watchdog is not None
    assert len(loop_watch.watchdog.stalls) == 1, loop_watch.watchdog.stalls
    assert "(asleep)" in loop_watch.watchdog.where[0]


def _spin(seconds: float) -> None:
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        pass


@pytest.mark.asyncio
@pytest.mark.blocks_loop(reason="keeps the loop on the CPU 250 ms to prove the watchdog sees it")
async def test_work_on_the_loop_is_recorded(
    start_gateway: GatewayFactory, loop_watch: LoopWatch
) -> None:
    await start_gateway()
    asyncio.get_running_loop().call_soon(_spin, 0.25)
    await asyncio.sleep(0.1)
    assert loop_watch.watchdog is not None
    assert len(loop_watch.watchdog.stalls) == 1, loop_watch.watchdog.stalls
    assert "(on the CPU)" in (loop_watch.watchdog.verdict() or "")
    assert "_spin" in loop_watch.watchdog.where[0]


@pytest.mark.asyncio
async def test_a_loop_busy_with_short_callbacks_is_not_blocked(
    start_gateway: GatewayFactory, loop_watch: LoopWatch
) -> None:
    await start_gateway()
    loop = asyncio.get_running_loop()
    for _ in range(300):  # 0.3 s of CPU in all, 1 ms at a time
        loop.call_soon(_spin, 0.001)
    await asyncio.sleep(0.05)
    assert loop_watch.watchdog is not None and loop_watch.watchdog.stalls == []


@pytest.mark.asyncio
async def test_a_busy_but_yielding_gateway_is_not_reported(
    start_gateway: GatewayFactory, loop_watch: LoopWatch
) -> None:
    gw = await start_gateway()
    async with httpx2.AsyncClient(base_url=gw.url) as http:
        for _ in range(20):
            assert (await http.get("/health/live")).status_code == 200
    await asyncio.sleep(0.2)
    assert loop_watch.watchdog is not None and loop_watch.watchdog.stalls == []


def test_time_outside_a_run_of_the_loop_is_not_lag() -> None:
    loop = asyncio.new_event_loop()
    watchdog = LoopWatchdog(loop)
    try:
        watchdog.start()
        loop.run_until_complete(asyncio.sleep(0.05))
        time.sleep(0.25)  # sync code between two runs, as between pytest-asyncio fixtures
        loop.run_until_complete(asyncio.sleep(0.1))
        assert watchdog.stalls == []

        async def block() -> None:
            time.sleep(0.25)  # noqa: ASYNC251 - the blocking under test
            await asyncio.sleep(0.05)

        loop.run_until_complete(block())
        assert len(watchdog.stalls) == 1
    finally:
        watchdog.stop()
        loop.close()


def test_an_undeclared_blocking_test_fails(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(
        test_blocks=textwrap.dedent(
            f"""
            import asyncio, time
            import pytest

            @pytest.mark.asyncio
            async def test_blocks(start_gateway):
                await start_gateway()
                time.sleep(0.25)
                await asyncio.sleep(0.05)

            @pytest.mark.asyncio
            @pytest.mark.{BLOCKS_LOOP}(reason="on purpose")
            async def test_blocks_on_purpose(start_gateway):
                await start_gateway()
                time.sleep(0.25)
                await asyncio.sleep(0.05)
            """
        )
    )
    result = pytester.runpytest_subprocess(
        "-p", "tests.conftest", "-p", "no:cacheprovider", "--rootdir", str(pytester.path)
    )
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*the event loop running the gateway was blocked 1 time(s)*"])
