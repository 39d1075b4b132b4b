"""``serve --tls-cert --tls-key``: HTTPS and WSS served directly, by both HTTP servers."""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
from websockets.asyncio.client import connect

from conduit_tornado import Gateway, Settings
from conduit_tornado.server.tls import TlsSettingsError, server_context
from tests.conftest import MASTER_KEY, GatewayFactory
from tests.fakes.providers import API_KEY, FakeProviders
from tests.fakes.realtime import FakeRealtime
from tests.fakes.tls import Pki, make_pki
from tests.served import Served, serve_fails

pytestmark = pytest.mark.asyncio
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


def trusting(pki: Pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca))


@dataclass
class Env:
    gw: Gateway
    key: str
    ca: ssl.SSLContext


@pytest_asyncio.fixture(params=["conduit", "tornado"])
async def env(
    request: pytest.FixtureRequest,
    start_gateway: GatewayFactory,
    pki: Pki,
    fake: FakeProviders,
    fake_realtime: FakeRealtime,
) -> Env:
    gw = await start_gateway(
        tls_cert=pki.server_cert, tls_key=pki.server_key, http_server=request.param
    )
    ca = trusting(pki)
    async with httpx.AsyncClient(
        base_url=gw.url + "/admin/v1",
        verify=ca,
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    ) as admin:

        async def post(path: str, **body: Any) -> dict[str, Any]:
            r = await admin.post(path, json=body)
            assert r.status_code in (200, 201), r.text
            answer: dict[str, Any] = r.json()
            return answer

        await post(
            "/providers", name="up", type="openai", base_url=fake.url + "/v1", api_key=API_KEY
        )
        await post(
            "/providers",
            name="rt-up",
            type="openai",
            base_url=fake_realtime.url + "/v1",
            api_key=API_KEY,
        )
        await post("/models", name="m", deployments=[{"provider": "up", "model": "gpt-4o-mini"}])
        await post(
            "/models", name="rt", deployments=[{"provider": "rt-up", "model": "gpt-realtime"}]
        )
        key = (await post("/keys", name="tls"))["key"]
    return Env(gw, key, ca)


async def test_chat_completions_over_https_with_the_openai_sdk(env: Env) -> None:
    assert env.gw.url.startswith("https://")
    async with openai.AsyncOpenAI(
        base_url=env.gw.url + "/v1",
        api_key=env.key,
        max_retries=0,
        http_client=httpx.AsyncClient(verify=env.ca),
    ) as client:
        done = await client.chat.completions.create(model="m", messages=HI)
        assert done.choices[0].message.content == "Hello from the fake"
        stream = await client.chat.completions.create(model="m", messages=HI, stream=True)
        text = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        assert "".join(text) == "Hello from the fake"
    # A client that does not trust the certificate's CA gets no answer at all.
    async with openai.AsyncOpenAI(
        base_url=env.gw.url + "/v1", api_key=env.key, max_retries=0
    ) as untrusting:
        with pytest.raises(openai.APIConnectionError):
            await untrusting.chat.completions.create(model="m", messages=HI)


async def test_realtime_websocket_over_wss(env: Env, fake_realtime: FakeRealtime) -> None:
    async with httpx.AsyncClient(base_url=env.gw.url, verify=env.ca) as http:
        r = await http.post(
            "/v1/realtime/sessions",
            json={"model": "rt", "instructions": "Be a fox."},
            headers={"Authorization": f"Bearer {env.key}"},
        )
    assert r.status_code == 200, r.text
    session = r.json()
    assert session["websocket_url"].startswith(f"wss://127.0.0.1:{env.gw.port}/")
    secret = session["client_secret"]["value"]
    async with connect(
        session["websocket_url"],
        ssl=env.ca,
        additional_headers={"Authorization": f"Bearer {secret}"},
        max_size=None,
    ) as ws:

        async def until(kind: str) -> list[str]:
            seen = []
            while True:
                event = json.loads(await asyncio.wait_for(ws.recv(), 10))
                seen.append(event["type"])
                if event["type"] == kind:
                    return seen

        assert (await until("session.updated"))[0] == "session.created"
        # Large enough to cross the relay in many reads, both ways.
        audio = "AQ" * 300_000
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
        await ws.send(json.dumps({"type": "response.create"}))
        assert (await until("response.done"))[-1] == "response.done"
    assert fake_realtime.conns[0].query["model"] == "gpt-realtime"
    appended = [
        e for e in fake_realtime.conns[0].events if e["type"] == "input_audio_buffer.append"
    ]
    assert appended[0]["audio"] == audio


async def test_tls_settings_must_be_complete_and_usable(pki: Pki, tmp_path: Path) -> None:
    for fields, message in (
        ({"tls_cert": pki.server_cert}, "CONDUIT_TLS_CERT is set without CONDUIT_TLS_KEY"),
        ({"tls_key": pki.server_key}, "CONDUIT_TLS_KEY is set without CONDUIT_TLS_CERT"),
        ({"tls_cert": pki.server_cert, "tls_key": pki.client_key}, "cannot use"),
        ({"tls_cert": tmp_path / "nowhere.pem", "tls_key": pki.server_key}, "no such file"),
    ):
        with pytest.raises(TlsSettingsError, match=message):
            server_context(Settings(**fields))
    assert server_context(Settings()) is None
    done = await serve_fails(
        tmp_path, "--tls-cert", str(pki.server_cert), env={"CONDUIT_STORE": "memory"}
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: CONDUIT_TLS_CERT is set without CONDUIT_TLS_KEY")
    assert "Traceback" not in done.stderr


async def test_https_served_by_two_workers(tmp_path: Path, pki: Pki, fake: FakeProviders) -> None:
    served = await Served.start(
        tmp_path,
        "--workers",
        "2",
        "--tls-cert",
        str(pki.server_cert),
        "--tls-key",
        str(pki.server_key),
        fake_url=fake.url,
    )
    try:
        assert served.url.startswith("https://")
        ca = trusting(pki)
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(verify=ca, limits=limits) as http:
            pids = {(await http.get(served.url + "/health/live")).json()["pid"] for _ in range(30)}
            assert pids == set(served.pids)
            r = await http.post(
                served.url + "/admin/v1/keys",
                json={"name": "k"},
                headers={"Authorization": f"Bearer {MASTER_KEY}"},
            )
            key = r.json()["key"]
        async with openai.AsyncOpenAI(
            base_url=served.url + "/v1",
            api_key=key,
            max_retries=0,
            http_client=httpx.AsyncClient(verify=ca),
        ) as client:
            done = await client.chat.completions.create(model="m", messages=HI)
            assert done.choices[0].message.content == "Hello from the fake"
    finally:
        assert await served.stop() == 0
