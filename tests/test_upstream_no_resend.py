"""A paid POST goes out once. The client may only send a request again when the pooled
connection it was queued on closed before any byte of it was written (hyper-util's
retry of a request it never sent); past that point a failure is reported, not repeated.

The first two tests reproduce the old hand-written client's defects: on a reused
connection a first-byte timeout made it send the POST again on a fresh connection, and
two stale pooled connections in a row ended in ``AssertionError("unreachable")`` (a 500).
Each fake counts the requests that reached it.
"""

from __future__ import annotations

import asyncio

import pytest

from conduit_tornado.routing.upstream import ProviderError, Timeouts, read_body
from tests.fakes.raw import Received, close_after_answer, drop_from, response, serving, stall_from

pytestmark = pytest.mark.asyncio
T = Timeouts(connect=5.0, first_byte=None, total=10.0)


async def test_a_first_byte_timeout_on_a_reused_connection_sends_the_post_once() -> None:
    async with serving(stall_from(1)) as (server, upstream):
        await upstream.request_json("p", "POST", server.url, T, json={"warm": True})
        patient = Timeouts(connect=5.0, first_byte=0.3, total=1.0)
        with pytest.raises(ProviderError) as caught:
            await upstream.request("p", "POST", server.url, patient, json={"paid": True})
        assert caught.value.kind == "timeout"
        # pyreqwest lets an abandoned exchange run on until its total deadline (it detaches
        # rather than aborts the Rust task): the connection is closed then, not reused, and
        # nothing is sent again meanwhile.
        for _ in range(100):
            if server.open == 0:
                break
            await asyncio.sleep(0.05)
        assert server.open == 0
        assert [r.body for r in server.requests] == [b'{"warm":true}', b'{"paid":true}']
        assert server.connections == 1


async def test_a_pooled_connection_closed_after_reading_the_post_is_not_retried() -> None:
    async with serving(drop_from(2, delay=0.1)) as (server, upstream):
        await asyncio.gather(
            *(upstream.request_json("p", "POST", server.url, T, json={}) for _ in range(2))
        )
        assert server.connections == 2  # two pooled connections, both about to be dropped
        for _ in range(2):  # each drop is reported, on whichever pooled connection
            with pytest.raises(ProviderError) as caught:
                await upstream.request("p", "POST", server.url, T, json={"paid": True})
            assert caught.value.kind == "server"
        await asyncio.sleep(0.3)
        assert len(server.requests) == 4  # 2 warm-up calls, then each paid call exactly once


async def test_a_connection_the_server_closed_while_idle_is_replaced_unseen() -> None:
    async with serving(close_after_answer()) as (server, upstream):
        for _ in range(3):
            await upstream.request_json("p", "POST", server.url, T, json={})
            await asyncio.sleep(0.2)  # the server closes the idle connection meanwhile
        assert len(server.requests) == 3 and server.connections == 3


async def test_idle_connections_expire_in_the_background() -> None:
    async with serving(stall_from(10), upstream_pool_idle=0.3) as (server, upstream):
        await upstream.request_json("p", "POST", server.url, T, json={})
        assert server.open == 1
        for _ in range(100):  # no call is made: only the pool's own timer closes it
            if server.open == 0:
                break
            await asyncio.sleep(0.05)
        assert server.open == 0


async def test_the_pool_keeps_at_most_its_size_of_idle_connections() -> None:
    async def slow(req: Received, writer: asyncio.StreamWriter, index: int) -> None:
        await asyncio.sleep(0.2)
        writer.write(response())
        await writer.drain()

    async with serving(slow, upstream_pool_size=1) as (server, upstream):
        answers = await asyncio.gather(
            *(upstream.request("p", "POST", server.url, T, json={}) for _ in range(3))
        )
        for answer in answers:
            await read_body(answer)
        assert server.connections == 3
        for _ in range(100):
            if server.open == 1:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        assert server.open == 1  # the other two were closed, not pooled
