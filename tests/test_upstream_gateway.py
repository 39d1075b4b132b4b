"""The provider client's rules seen through the gateway: an answer over the size cap is a
502 that routing does not retry, and provider calls carry the gateway's Via entry."""

from __future__ import annotations

import asyncio

import httpx2
import pytest

from conduit_tornado import AdminClient
from conduit_tornado.core import via
from tests.conftest import MASTER_KEY, GatewayFactory
from tests.fakes.raw import RawServer, fixed, gzip_bomb, gzipped

pytestmark = pytest.mark.asyncio
HI = [{"role": "user", "content": "Say hello"}]
CAP = 4 * 1024 * 1024
CHAT = (
    b'{"id":"c","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
)


async def _chat(
    start_gateway: GatewayFactory, server: RawServer, **settings: object
) -> httpx2.Response:
    gw = await start_gateway(**settings)
    async with AdminClient(gw.url, MASTER_KEY) as admin:
        await admin.create_provider(
            name="raw", type="openai", base_url=server.url + "/v1", api_key="sk-raw"
        )
        await admin.create_model(name="m", deployments=[{"provider": "raw", "model": "gpt-4o"}])
        key = (await admin.create_key(name="k"))["key"]
    async with httpx2.AsyncClient(base_url=gw.url, timeout=30) as http:
        return await http.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": HI},
            headers={"Authorization": f"Bearer {key}"},
        )


async def test_a_gzip_bomb_is_a_502_and_is_not_retried(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cap through the environment too: the gateway's Upstream reads it either way.
    monkeypatch.setenv("CONDUIT_MAX_UPSTREAM_BYTES", str(CAP))
    bomb = await asyncio.to_thread(gzip_bomb, 300 * 1024 * 1024)  # seconds of zlib: not here
    server = await RawServer(gzipped(bomb)).start()
    try:
        r = await _chat(start_gateway, server, max_retries=2, max_upstream_bytes=CAP)
    finally:
        await server.stop()
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "upstream_too_large"
    assert len(server.requests) == 1  # asking again would cost as much again


async def test_provider_calls_carry_the_gateways_via_entry(start_gateway: GatewayFactory) -> None:
    server = await RawServer(fixed(CHAT, headers={"Content-Type": "application/json"})).start()
    try:
        r = await _chat(start_gateway, server)
    finally:
        await server.stop()
    assert r.status_code == 200, r.text
    assert server.requests[0].headers["via"].endswith(f"1.1 {via.TOKEN}")
    assert server.requests[0].headers["authorization"] == "Bearer sk-raw"
