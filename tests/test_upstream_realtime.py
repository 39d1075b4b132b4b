"""The realtime WebSocket to a provider (aiohttp) is configured like the HTTP calls: the
Via chain on its handshake, header values checked before connecting, and the
environment's proxy."""

from __future__ import annotations

import pytest

from conduit_tornado.core import via
from conduit_tornado.core.settings import Settings
from conduit_tornado.routing.realtime import connect_ws
from conduit_tornado.routing.upstream import ProviderError, Timeouts, Upstream
from tests.fakes.providers import API_KEY
from tests.fakes.proxy import LoopbackProxy
from tests.fakes.raw import RawServer, stall_from
from tests.fakes.realtime import FakeRealtime

pytestmark = pytest.mark.asyncio
T = Timeouts(connect=5.0, first_byte=None, total=10.0)
AUTH = {"Authorization": f"Bearer {API_KEY}"}


async def _open(fake_realtime: FakeRealtime, headers: dict[str, str]) -> None:
    upstream = Upstream(Settings())
    try:
        url = f"ws://127.0.0.1:{fake_realtime.port}/v1/realtime?model=gpt-realtime"
        socket = await connect_ws(upstream, "p", url, headers, T, 1 << 20)
        await socket.close(1000, "done")
    finally:
        await upstream.close()


async def test_the_handshake_carries_the_via_chain(
    fake_realtime: FakeRealtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    token = via.received.set("1.1 edge")
    try:
        await _open(fake_realtime, AUTH)
    finally:
        via.received.reset(token)
    assert fake_realtime.conns[0].headers["via"] == f"1.1 edge, 1.1 {via.TOKEN}"


async def test_a_header_that_could_inject_is_refused_before_connecting(
    fake_realtime: FakeRealtime,
) -> None:
    with pytest.raises(ProviderError) as caught:
        await _open(fake_realtime, {"Authorization": "Bearer k\r\nX-Injected: 1"})
    assert caught.value.kind == "config" and fake_realtime.conns == []


async def test_the_handshake_goes_through_the_environments_proxy(
    fake_realtime: FakeRealtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = await LoopbackProxy().start()
    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    try:
        await _open(fake_realtime, AUTH)
    finally:
        await proxy.stop()
    assert len(proxy.seen) == 1 and proxy.seen[0].startswith("GET ws://127.0.0.1:")
    assert len(fake_realtime.conns) == 1


async def test_a_handshake_that_gets_no_answer_times_out() -> None:
    server = await RawServer(stall_from(0)).start()
    upstream = Upstream(Settings())
    try:
        url = f"ws://127.0.0.1:{server.port}/v1/realtime?model=gpt-realtime"
        quick = Timeouts(connect=0.5, first_byte=0.3, total=30.0)
        with pytest.raises(ProviderError) as caught:
            await connect_ws(upstream, "p", url, AUTH, quick, 1 << 20)
        assert caught.value.kind == "timeout"
        assert len(server.requests) == 1
    finally:
        await upstream.close()
        await server.stop()
