"""Many streams at once, half of whose clients leave midway: each is logged once, with the
right status, and nothing stays counted as in flight."""

from __future__ import annotations

import asyncio

import httpx2
import pytest

from tests.proxy_setup import Wired

pytestmark = pytest.mark.asyncio

HI = [{"role": "user", "content": "hi"}]
STREAM = {"model": "gpt", "messages": HI, "stream": True}


async def test_concurrent_streams_with_clients_leaving(wired: Wired) -> None:
    count = 20
    for _ in range(count):
        wired.fake.then(chunk_delay=0.05)

    async def one(leave: bool) -> None:
        async with wired.stream(STREAM) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if leave and "Hello" in line:
                    return  # leave after the first words

    await asyncio.gather(*(one(i % 2 == 0) for i in range(count)))
    ctx = wired.gateway.ctx
    assert ctx is not None
    for _ in range(200):  # the streams whose client left end on the gateway's side too
        if ctx.in_flight.requests == 0 and wired.fake.disconnected == count // 2:
            break
        await asyncio.sleep(0.05)
    assert ctx.in_flight.requests == 0
    assert wired.fake.disconnected == count // 2
    await ctx.recorder.flush()
    logs = await ctx.store.find("request_logs", {}, limit=100)
    statuses = sorted(log["status"] for log in logs)
    assert statuses == [200] * (count // 2) + [499] * (count // 2)
    # The gateway still serves after all that.
    async with httpx2.AsyncClient(base_url=wired.gateway.url, timeout=30) as http:
        r = await http.post(
            "/v1/chat/completions",
            json={"model": "gpt", "messages": HI},
            headers={"Authorization": f"Bearer {wired.key}"},
        )
        assert r.status_code == 200


async def test_a_client_leaving_during_upstream_silence_hangs_up_at_once(wired: Wired) -> None:
    # The upstream sends one event and then nothing: only cancelling the relay (not a
    # failed write, since there is nothing to write) can notice the client has gone.
    wired.fake.then(hold_after_first=True)
    async with wired.stream(STREAM) as r:
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                break  # leave after the first event
    ctx = wired.gateway.ctx
    assert ctx is not None
    for _ in range(100):  # the request ends while the upstream is still silent
        if ctx.in_flight.requests == 0:
            break
        await asyncio.sleep(0.02)
    assert ctx.in_flight.requests == 0
    await ctx.recorder.flush()
    logs = await ctx.store.find("request_logs", {})
    assert [log["status"] for log in logs] == [499]
    wired.fake.release.set()  # the upstream speaks again, to a connection already closed
    for _ in range(100):
        if wired.fake.disconnected:
            break
        await asyncio.sleep(0.02)
    assert wired.fake.disconnected == 1
