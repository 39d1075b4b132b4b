"""A provider whose base_url leads back to the gateway must not make it call itself
forever: every hop adds this process's token to Via, and a request that carries it (or
too long a chain) is refused with 508 before any auth or store work."""

from __future__ import annotations

import httpx2
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from conduit_tornado import AdminClient
from conduit_tornado.core import via
from tests.conftest import MASTER_KEY, GatewayFactory
from tests.proxy_setup import Wired

pytestmark = pytest.mark.asyncio
OWN = "1.1 " + via.TOKEN


async def test_a_request_that_has_been_here_is_refused(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway()
    async with httpx2.AsyncClient(base_url=gw.url) as http:
        for chain in (OWN, f"1.1 proxy, {OWN}", ", ".join(["1.1 elsewhere"] * 9)):
            # No key at all: a loop is answered before authentication.
            r = await http.post("/v1/chat/completions", json={}, headers={"Via": chain})
            assert r.status_code == 508, r.text
            error = r.json()["error"]
            assert error["code"] == "loop_detected" and "base_url" in error["message"]
            r = await http.get("/admin/v1/keys", headers={"Via": chain})
            assert r.status_code == 508
        # A chain through other proxies is fine: the request goes on to authentication.
        r = await http.post("/v1/chat/completions", json={}, headers={"Via": "1.1 cdn, 1.0 lb"})
        assert r.status_code == 401


async def test_the_realtime_socket_refuses_loops_too(wired: Wired) -> None:
    await wired.admin.create_model(name="rt", deployments=[{"provider": "mock", "model": "m"}])
    url = f"ws://127.0.0.1:{wired.gateway.port}/v1/realtime?model=rt"
    auth = {"Authorization": f"Bearer {wired.key}"}
    with pytest.raises(InvalidStatus) as refusal:
        async with connect(url, additional_headers={**auth, "Via": OWN}):
            pass
    assert refusal.value.response.status_code == 508
    async with connect(url, additional_headers={**auth, "Via": "1.1 proxy"}) as ws:
        assert ws.request is not None


async def test_a_provider_pointing_at_the_gateway_itself_ends_at_once(
    start_gateway: GatewayFactory,
) -> None:
    # The probe: 3,250 nested requests in 54 s, until file descriptors ran out.
    gw = await start_gateway(retry_backoff=0.01)
    async with AdminClient(gw.url, MASTER_KEY) as admin:
        key = (await admin.create_key(name="loop"))["key"]
        await admin.create_provider(
            name="myself", type="openai", base_url=gw.url + "/v1", api_key=key
        )
        await admin.create_model(name="loop", deployments=[{"provider": "myself", "model": "loop"}])
    async with httpx2.AsyncClient(base_url=gw.url, timeout=30) as http:
        r = await http.post(
            "/v1/chat/completions",
            json={"model": "loop", "messages": [{"role": "user", "content": "x"}]},
            headers={"Authorization": f"Bearer {key}"},
        )
    # Not retried (that would loop again): the client is told it is a loop.
    assert r.status_code == 508, r.text
    assert r.json()["error"]["code"] == "loop_detected"
    assert "loop detected" in r.json()["error"]["message"].lower()
    ctx = gw.ctx
    assert ctx is not None
    await ctx.recorder.flush()
    # Only the client's own request got past the loop check (the hops back were refused
    # before authentication, so they never became requests of their own).
    logged = await ctx.store.find("request_logs", {})
    assert len(logged) == 1 and logged[0]["model"] == "loop"
