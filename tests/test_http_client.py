"""The provider client (routing/upstream.py on pyreqwest) against raw loopback servers that
answer byte for byte: what goes out, what comes back, pooling, deadlines and failures."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator

import pytest

from conduit_tornado.core import via
from conduit_tornado.routing.upstream import ProviderError, Timeouts, read_body
from tests.conftest import free_port
from tests.fakes.raw import (
    Received,
    chunks,
    endless,
    fixed,
    gzipped,
    response,
    serving,
    stall_from,
)

pytestmark = pytest.mark.asyncio
T = Timeouts(connect=5.0, first_byte=None, total=10.0)


async def test_keep_alive_reuses_one_connection_and_sends_the_request_exactly() -> None:
    async def echo(req: Received, writer: asyncio.StreamWriter, index: int) -> None:
        writer.write(response(b'{"echo":' + req.body + b"}", headers={"X-Up": "yes"}))
        await writer.drain()

    async with serving(echo) as (server, upstream):
        for i in range(3):
            answer = await upstream.request_json(
                "p",
                "POST",
                server.url + "/v1/things?x=1",
                T,
                json={"n": i},
                headers={"X-Test": "yes", "Authorization": "Bearer k"},
                params={"y": "2"},
            )
            assert answer == {"echo": {"n": i}}
        assert server.connections == 1  # kept alive and reused
        first = server.requests[0]
        assert (first.method, first.target) == ("POST", "/v1/things?x=1&y=2")
        assert first.headers["x-test"] == "yes"
        assert first.headers["authorization"] == "Bearer k"
        assert first.headers["content-type"] == "application/json"
        assert first.headers["content-length"] == str(len(first.body))
        assert first.headers["via"] == via.outgoing()
        assert "cookie" not in first.headers and "referer" not in first.headers


async def test_via_carries_the_received_chain_then_this_gateway() -> None:
    async with serving(fixed()) as (server, upstream):
        token = via.received.set("1.1 other-gateway")
        try:
            await upstream.request_json("p", "POST", server.url, T, json={})
        finally:
            via.received.reset(token)
        assert server.requests[0].headers["via"] == f"1.1 other-gateway, 1.1 {via.TOKEN}"


async def test_response_headers_are_looked_up_whatever_their_case() -> None:
    async with serving(fixed(headers={"Content-Type": "audio/mpeg"})) as (server, upstream):
        answer = await upstream.request("p", "POST", server.url, T, json={})
        assert answer.headers.get("content-type") == "audio/mpeg"
        assert answer.headers.get("CONTENT-TYPE") == "audio/mpeg"
        assert answer.headers.get("x-missing", "none") == "none"
        assert await read_body(answer) == b'{"ok": true}'


async def test_a_gzip_answer_arrives_decoded() -> None:
    payload = b'{"text": "' + b"word " * 5000 + b'"}'
    async with serving(gzipped(gzip.compress(payload))) as (server, upstream):
        answer = await upstream.request("p", "POST", server.url, T, json={})
        assert await read_body(answer) == payload
        assert "gzip" in server.requests[0].headers["accept-encoding"]


async def test_a_stream_hands_on_each_piece_as_it_arrives() -> None:
    hold = asyncio.Event()
    pieces = [b"data: one\n\n", b"data: two\n\n"]
    async with serving(chunks(pieces, hold=hold)) as (server, upstream):
        answer = await upstream.request("p", "POST", server.url, T, json={"stream": True})
        # The server holds the rest until the first piece has been read here.
        first = await asyncio.wait_for(answer.next_chunk(), 5)
        assert first == pieces[0]
        hold.set()
        rest = b""
        while (piece := await answer.next_chunk()) is not None:
            rest += piece
        assert rest == pieces[1]
        await answer.aclose()


async def test_a_streamed_upload_goes_out_whole_with_its_length() -> None:
    parts = [b"a" * 1000, b"b" * 70000, b"c"]

    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    async with serving(fixed()) as (server, upstream):
        size = sum(map(len, parts))
        answer = await upstream.request("p", "POST", server.url, T, stream=body(), length=size)
        await read_body(answer)
        seen = server.requests[0]
        assert seen.body == b"".join(parts)
        assert seen.headers["content-length"] == str(size) and not seen.chunked


async def test_a_refused_connection_is_a_connect_failure() -> None:
    async with serving(fixed()) as (_, upstream):
        with pytest.raises(ProviderError) as caught:
            await upstream.request("p", "POST", f"http://127.0.0.1:{free_port()}", T, json={})
        assert caught.value.kind == "connect" and caught.value.retryable


async def test_the_total_deadline_covers_a_stalled_body() -> None:
    hold = asyncio.Event()  # never set: the body stops after its first piece
    async with serving(chunks([b"data: 1\n\n", b"data: 2\n\n"], hold=hold)) as (server, up):
        answer = await up.request(
            "p", "POST", server.url, Timeouts(connect=5, first_byte=None, total=0.5), json={}
        )
        assert await answer.next_chunk() == b"data: 1\n\n"
        with pytest.raises(ProviderError) as caught:
            await answer.next_chunk()
        assert caught.value.kind == "timeout"


async def test_no_answer_in_total_time_is_a_timeout() -> None:
    async with serving(stall_from(0)) as (server, upstream):
        with pytest.raises(ProviderError) as caught:
            await upstream.request(
                "p", "POST", server.url, Timeouts(connect=5, first_byte=None, total=0.3), json={}
            )
        assert caught.value.kind == "timeout"
        assert len(server.requests) == 1


async def test_abandoning_a_stream_midway_closes_its_connection() -> None:
    async with serving(endless(b"data: x\n\n")) as (server, upstream):
        answer = await upstream.request("p", "POST", server.url, T, json={})
        assert await answer.next_chunk()
        await answer.aclose()
        for _ in range(100):  # the server notices the close
            if server.open == 0:
                break
            await asyncio.sleep(0.02)
        assert server.open == 0


async def test_release_closes_an_abandoned_stream_without_awaiting() -> None:
    async with serving(endless(b"data: x\n\n")) as (server, upstream):
        answer = await upstream.request("p", "POST", server.url, T, json={})
        assert await answer.next_chunk()
        answer.release()
        for _ in range(100):
            if server.open == 0:
                break
            await asyncio.sleep(0.02)
        assert server.open == 0


async def test_a_redirect_is_not_followed() -> None:
    moved = fixed(b"", status=307, headers={"Location": "/elsewhere"})
    async with serving(moved) as (server, upstream):
        with pytest.raises(ProviderError) as caught:
            await upstream.request("p", "POST", server.url, T, json={"paid": True})
        assert caught.value.kind == "config"
        assert [r.target for r in server.requests] == ["/"]  # never re-sent elsewhere


@pytest.mark.parametrize(
    ("status", "headers", "kind", "retry_after"),
    [
        (429, {"Retry-After": "3"}, "rate_limit", 3.0),
        (401, {}, "auth", None),
        (503, {"retry-after-ms": "1500"}, "server", 1.5),
        (400, {}, "client", None),
    ],
)
async def test_error_answers_are_classified_with_their_message(
    status: int, headers: dict[str, str], kind: str, retry_after: float | None
) -> None:
    failure = response(b'{"error": {"message": "scripted"}}', status=status, headers=headers)

    async def fail_once(req: Received, writer: asyncio.StreamWriter, index: int) -> None:
        writer.write(failure if index == 0 else response())
        await writer.drain()

    async with serving(fail_once) as (server, upstream):
        with pytest.raises(ProviderError) as caught:
            await upstream.request("p", "POST", server.url, T, json={})
        assert (caught.value.kind, caught.value.message) == (kind, "scripted")
        assert caught.value.retry_after == retry_after
        # The error body was read to its end: the connection is reused.
        await upstream.request_json("p", "POST", server.url, T, json={})
        assert server.connections == 1
