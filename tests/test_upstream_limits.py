"""Caps on what a provider may send back (size after decompression, headers, one stream
event, a whole stream) and checks on what goes out (header values), against raw loopback
fakes. A capped answer is a 502-class ProviderError that routing does not retry."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from conduit_tornado.routing import upstream as upstream_module
from conduit_tornado.routing.upstream import (
    ProviderError,
    SseReader,
    Timeouts,
    read_body,
)
from tests.conftest import LoopWatchdog
from tests.fakes.raw import Received, endless, fixed, gzip_bomb, gzipped, serving

pytestmark = pytest.mark.asyncio
T = Timeouts(connect=5.0, first_byte=None, total=30.0)
MIB = 1 << 20


def _peak_rss_kib() -> int:
    status = Path("/proc/self/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+)", status)
    assert match is not None
    return int(match.group(1))


def _reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM starts again from now


async def test_a_gzip_bomb_fails_fast_without_inflating_into_memory() -> None:
    bomb = gzip_bomb(300 * MIB)
    assert len(bomb) < 400 * 1024  # 300 MB of zeros, about 300 KB on the wire
    cap = 4 * MIB
    async with serving(gzipped(bomb), max_upstream_bytes=cap) as (server, upstream):
        _reset_peak_rss()
        before = _peak_rss_kib()
        with pytest.raises(ProviderError) as caught:
            await upstream.request_json("p", "POST", server.url, T, json={})
        grown = (_peak_rss_kib() - before) * 1024
        assert caught.value.kind == "too_large" and not caught.value.retryable
        assert caught.value.to_api_error().status == 502
        assert len(server.requests) == 1
        # Reading stopped near the cap: nowhere near the 300 MB the answer inflates to.
        assert grown < 64 * MIB, grown


async def test_a_declared_length_over_the_cap_is_refused_before_reading() -> None:
    async def liar(req: Received, writer: asyncio.StreamWriter, index: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n{")
        await writer.drain()
        await asyncio.Event().wait()  # the rest never comes

    async with serving(liar, max_upstream_bytes=MIB) as (server, upstream):
        with pytest.raises(ProviderError) as caught:
            await upstream.request_json("p", "POST", server.url, T, json={})
        assert caught.value.kind == "too_large"


async def test_an_answer_just_under_the_cap_is_accepted() -> None:
    body = b'"' + b"x" * (MIB - 3) + b'"'
    async with serving(fixed(body), max_upstream_bytes=MIB) as (server, upstream):
        assert len(await upstream.request_json("p", "POST", server.url, T, json={})) == MIB - 3


async def test_a_stream_longer_than_the_cap_is_cut_off() -> None:
    async with serving(endless(b"data: {}\n\n"), max_upstream_bytes=64 * 1024) as (server, up):
        answer = await up.request("p", "POST", server.url, T, json={})
        reader = SseReader(answer)
        events = 0

        async def read_all() -> None:
            nonlocal events
            while (batch := await reader.next_batch()) is not None:
                events += len(batch)

        with pytest.raises(ProviderError) as caught:
            await read_all()
        assert caught.value.kind == "too_large"
        assert 0 < events <= 64 * 1024 // len(b"data: {}\n\n")


async def test_one_oversized_stream_event_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream_module, "MAX_SSE_EVENT", 32 * 1024)
    async with serving(endless(b"data: " + b"x" * 1000)) as (server, upstream):  # no blank line
        answer = await upstream.request("p", "POST", server.url, T, json={})
        with pytest.raises(ProviderError) as caught:
            await SseReader(answer).next_batch()
        assert caught.value.kind == "too_large"
        await answer.aclose()


async def test_oversized_answer_headers_are_refused() -> None:
    headers = {f"X-Filler-{i}": "v" * 1000 for i in range(80)}  # 80 KB of headers
    async with serving(fixed(headers=headers)) as (server, upstream):
        with pytest.raises(ProviderError) as caught:
            await upstream.request("p", "POST", server.url, T, json={})
        assert caught.value.kind == "too_large"


async def test_ordinary_answer_headers_pass() -> None:
    headers = {f"X-Filler-{i}": "v" * 100 for i in range(40)}
    async with serving(fixed(headers=headers)) as (server, upstream):
        answer = await upstream.request("p", "POST", server.url, T, json={})
        assert answer.headers.get("x-filler-39") == "v" * 100
        await read_body(answer)


@pytest.mark.parametrize(
    "value",
    ["k\r\nX-Injected: 1", "k\nX-Injected: 1", "k\rx", "k\x00", "k\x7f", "k\x1b[0m", "clé", "€"],
)
async def test_a_header_value_that_could_inject_is_refused_before_sending(value: str) -> None:
    async with serving(fixed()) as (server, upstream):
        with pytest.raises(ProviderError) as caught:
            await upstream.request(
                "p", "POST", server.url, T, json={}, headers={"Authorization": value}
            )
        assert caught.value.kind == "config"
        assert "Authorization" in caught.value.message and value not in caught.value.message
        await asyncio.sleep(0.05)
        assert server.connections == 0 and server.requests == []


@pytest.mark.parametrize("name", ["X Bad", "X:Bad", "X\r\nBad", "", "Ünï"])
async def test_a_header_name_that_is_not_a_token_is_refused(name: str) -> None:
    async with serving(fixed()) as (server, upstream):
        with pytest.raises(ProviderError) as caught:
            await upstream.request("p", "POST", server.url, T, json={}, headers={name: "v"})
        assert caught.value.kind == "config"
        assert server.requests == []


async def test_tabs_and_visible_ascii_go_out_unchanged() -> None:
    value = "Bearer a-b_c.d~e+f/g=\th !#$%&'()*,;<>?@[]^`{|}"
    async with serving(fixed()) as (server, upstream):
        await read_body(
            await upstream.request(
                "p", "POST", server.url, T, json={}, headers={"Authorization": value}
            )
        )
        assert server.requests[0].headers["authorization"] == value.strip()


async def test_an_error_answer_is_read_only_up_to_its_cap() -> None:
    body = b'{"error": {"message": "' + b"m" * (200 * 1024) + b'"}}'
    async with serving(fixed(body, status=500)) as (server, upstream):
        with pytest.raises(ProviderError) as caught:
            await upstream.request("p", "POST", server.url, T, json={})
        # Only the first 64 KB were read: not JSON, so the status stands in for a message.
        assert caught.value.kind == "server" and caught.value.message == "HTTP 500"


async def test_a_streamed_bomb_is_read_in_one_pass_without_blocking_the_loop() -> None:
    # One event that never ends, inflating past MAX_SSE_EVENT: the reader once re-copied
    # and re-searched its whole buffer on every read, and froze the loop for seconds.
    bomb = gzip_bomb(24 * MIB)
    watchdog = LoopWatchdog(asyncio.get_running_loop())
    watchdog.start()
    try:
        async with serving(gzipped(bomb)) as (server, up):
            answer = await up.request("p", "POST", server.url, T, json={})
            reader = SseReader(answer)

            async def drain() -> None:
                while await reader.next_batch() is not None:
                    pass

            with pytest.raises(ProviderError) as caught:
                await drain()
            await answer.aclose()
    finally:
        watchdog.stop()
    assert caught.value.kind == "too_large"
    assert watchdog.stalls == [], watchdog.verdict()
