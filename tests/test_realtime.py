"""Realtime sessions and the WebSocket relay, against a fake provider socket."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any, cast

import httpx2
import openai
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conduit_tornado.store import MemoryStore, Store
from tests.conftest import GatewayFactory, settled
from tests.fakes.providers import API_KEY
from tests.fakes.realtime import FakeRealtime
from tests.realtime_setup import RT, recv, setup_realtime
from tests.store_faults import Down

pytestmark = pytest.mark.asyncio


async def test_session_create_and_relay_with_the_client_secret(rt: RT) -> None:
    session = await rt.session(
        instructions="Be a fox.", voice="verse", modalities=["audio", "text"]
    )
    assert session["object"] == "realtime.session" and session["id"].startswith("sess_")
    assert (
        session["model"] == "rt"
        and session["voice"] == "verse"
        and session["instructions"] == "Be a fox."
    )
    secret = session["client_secret"]
    assert secret["value"].startswith("ek_") and secret["expires_at"] > 0
    assert (
        session["websocket_url"]
        == f"ws://127.0.0.1:{rt.gw.port}/v1/realtime/sessions/{session['id']}/ws"
    )

    async with connect(
        session["websocket_url"], additional_headers={"Authorization": f"Bearer {secret['value']}"}
    ) as ws:
        events = await recv(ws, "session.updated")
        assert [e["type"] for e in events] == ["session.created", "session.updated"]
        assert events[1]["session"]["instructions"] == "Be a fox."
        await ws.send(
            json.dumps(
                {
                    "type": "input_audio_buffer.append",
                    "audio": base64.b64encode(b"\x01" * 3200).decode(),
                }
            )
        )
        await ws.send(json.dumps({"type": "response.create"}))
        events = await recv(ws, "response.done")
        kinds = [e["type"] for e in events]
        assert kinds == [
            "response.created",
            "response.output_audio.delta",
            "response.output_audio_transcript.delta",
            "response.done",
        ]
        assert events[2]["delta"] == "Be a fox. heard 3200 bytes"
        assert events[3]["response"]["usage"]["total_tokens"] == 150
    conn = rt.fake.conns[0]
    assert (
        conn.query["model"] == "gpt-realtime"
        and conn.headers["authorization"] == f"Bearer {API_KEY}"
    )
    # The session settings go first, then the client's events, in order.
    assert [e["type"] for e in conn.events] == [
        "session.update",
        "input_audio_buffer.append",
        "response.create",
    ]
    assert conn.events[0]["session"] == {
        "instructions": "Be a fox.",
        "voice": "verse",
        "modalities": ["audio", "text"],
    }

    # Usage, cost and the session's end are recorded.
    ctx = rt.gw.ctx
    assert ctx is not None
    for _ in range(50):
        stored = await ctx.store.get("realtime_sessions", session["id"])
        if stored and stored["status"] == "closed":
            break
        await asyncio.sleep(0.02)
    assert stored is not None and stored["status"] == "closed" and stored["responses"] == 1
    assert "secret_hash" in stored and secret["value"] not in repr(stored)
    await ctx.recorder.flush()
    logs = await ctx.store.find("request_logs", {"endpoint": "realtime"})
    assert len(logs) == 1 and logs[0]["prompt_tokens"] == 100 and logs[0]["completion_tokens"] == 50
    expected = (40 * 4 + 60 * 32 + 10 * 16 + 40 * 64) / 1e6  # gpt-realtime rates per million
    assert logs[0]["cost"] == pytest.approx(expected)
    key = await rt.admin.get_key(rt.key_id)
    assert key["spend"] == pytest.approx(expected)


async def test_secrets_and_keys_at_the_handshake(
    rt: RT, start_gateway: GatewayFactory, fake_realtime: FakeRealtime
) -> None:
    session = await rt.session()
    url, secret = session["websocket_url"], session["client_secret"]["value"]

    async def status(url: str, headers: dict[str, str] | None = None, **kw: Any) -> int:
        try:
            async with connect(url, additional_headers=headers or {}, **kw) as ws:
                await recv(ws, "session.created")
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    assert await status(url, {"Authorization": "Bearer ek_wrong"}) == 401
    assert await status(url, {"Authorization": f"Bearer {secret}"}) == 101
    assert await status(url, {"Authorization": f"Bearer {secret}"}) == 401  # single use
    assert (
        await status(url, {"Authorization": f"Bearer {rt.key}"}) == 101
    )  # the owning key, any time
    assert await status(url + f"?token={rt.key}") == 101  # for browsers that cannot set headers
    assert await status(url, subprotocols=["realtime", f"openai-insecure-api-key.{rt.key}"]) == 101  # type: ignore[list-item]
    other = (await rt.admin.create_key(name="other"))["key"]
    assert await status(url, {"Authorization": f"Bearer {other}"}) == 404  # not yours: not there
    assert (
        await status(url.replace(session["id"], "sess_nope"), {"Authorization": f"Bearer {rt.key}"})
        == 404
    )
    assert await status(url, {}) == 401
    async with httpx2.AsyncClient() as http:
        plain = await http.get(
            url.replace("ws://", "http://"), headers={"Authorization": f"Bearer {rt.key}"}
        )
        assert plain.status_code == 400 and plain.json()["error"]["code"] == "websocket_required"
        await rt.admin.create_provider(
            name="ant", type="anthropic", base_url="http://127.0.0.1:9", api_key="x"
        )
        await rt.admin.create_model(
            name="text-only", deployments=[{"provider": "ant", "model": "claude"}]
        )
        for body, code in (
            ({"model": "nope"}, 404),
            ({"model": "rt", "temperature": "hot"}, 400),
            ({}, 400),
            ({"model": "text-only"}, 400),  # no realtime-capable deployment
        ):
            r = await http.post(
                rt.gw.url + "/v1/realtime/sessions",
                json=body,
                headers={"Authorization": f"Bearer {rt.key}"},
            )
            assert r.status_code == code, body

    # An expired secret is refused.
    short, admin = await setup_realtime(start_gateway, fake_realtime, realtime_secret_ttl=0.1)
    s2 = await short.session()
    await asyncio.sleep(0.2)
    assert (
        await status(
            s2["websocket_url"], {"Authorization": f"Bearer {s2['client_secret']['value']}"}
        )
        == 401
    )
    await admin.aclose()


async def test_openai_sdk_realtime_client(rt: RT) -> None:
    async with (
        openai.AsyncOpenAI(base_url=rt.gw.url + "/v1", api_key=rt.key) as client,
        client.realtime.connect(model="rt") as conn,
    ):
        first = await conn.recv()
        assert first.type == "session.created"
        await conn.session.update(
            session={"type": "realtime", "instructions": "Speak like a pirate."}
        )
        updated = await conn.recv()
        assert updated.type == "session.updated"
        await conn.input_audio_buffer.append(audio=base64.b64encode(b"\x00" * 160).decode())
        await conn.response.create()
        seen = []
        async for event in conn:
            seen.append(event.type)
            if event.type == "response.output_audio_transcript.delta":
                assert event.delta.startswith("Speak like a pirate.")
            if event.type == "response.done":
                assert event.response.usage is not None and event.response.usage.total_tokens == 150
                break
        assert "response.output_audio.delta" in seen
    assert rt.fake.conns[-1].query["model"] == "gpt-realtime"


async def test_azure_upstream(rt: RT) -> None:
    async with (
        openai.AsyncOpenAI(base_url=rt.gw.url + "/v1", api_key=rt.key) as client,
        client.realtime.connect(model="rt-azure") as conn,
    ):
        assert (await conn.recv()).type == "session.created"
    conn_up = rt.fake.conns[-1]
    assert conn_up.path == "/openai/realtime" and conn_up.query["deployment"] == "my-realtime"
    assert conn_up.query["api-version"] and conn_up.headers["api-key"] == API_KEY


async def test_drops_and_closes_propagate(rt: RT) -> None:
    ws_url = f"ws://127.0.0.1:{rt.gw.port}/v1/realtime?model=rt"
    auth = {"Authorization": f"Bearer {rt.key}"}
    async with connect(ws_url, additional_headers=auth) as ws:
        await recv(ws, "session.created")
        await ws.send(json.dumps({"type": "test.drop"}))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 1011 and ws.close_reason == "upstream going away"

    async with connect(ws_url, additional_headers=auth) as ws:
        await recv(ws, "session.created")
        await ws.send(b"\x07\x08\x09")  # binary frames relay both ways
        assert await asyncio.wait_for(ws.recv(), 10) == b"\x09\x08\x07"
        await ws.close(code=1000, reason="done")
    for _ in range(100):
        if rt.fake.conns[-1].closed:
            break
        await asyncio.sleep(0.02)
    assert rt.fake.conns[-1].closed and rt.fake.conns[-1].close_code == 1000


async def test_budget_exhaustion_closes_the_session(rt: RT) -> None:
    tight = await rt.admin.create_key(name="tight", max_budget=0.001)
    async with rt.connect(tight["key"]) as ws:
        await recv(ws, "session.created")
        await ws.send(json.dumps({"type": "response.create"}))
        events = await recv(ws, "error")
        assert events[-2]["type"] == "response.done"
        assert events[-1]["error"]["code"] == "budget_exceeded"
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 1008
    with pytest.raises(InvalidStatus) as refused:  # and no new session starts
        async with rt.connect(tight["key"]):
            pass
    assert refused.value.response.status_code == 429


async def test_concurrent_session_limit(rt: RT) -> None:
    one = await rt.admin.create_key(name="one", max_realtime_sessions=1)
    url = f"ws://127.0.0.1:{rt.gw.port}/v1/realtime?model=rt"
    auth = {"Authorization": f"Bearer {one['key']}"}
    async with connect(url, additional_headers=auth) as ws:
        await recv(ws, "session.created")
        with pytest.raises(InvalidStatus) as info:
            async with connect(url, additional_headers=auth):
                pass
        assert info.value.response.status_code == 429
        assert b"parallel_limit_exceeded" in info.value.response.body
    ctx = rt.gw.ctx
    assert ctx is not None
    for _ in range(500):  # the slot is released by the server's on_close: wait for exactly that
        slots = await ctx.store.get("parallel", f"rt/{one['id']}")
        if slots is not None and sum((slots.get("by") or {}).values()) == 0:
            break
        await asyncio.sleep(0.01)
    async with connect(url, additional_headers=auth) as ws:  # the slot came back
        await recv(ws, "session.created")


async def test_idle_sessions_are_closed(
    start_gateway: GatewayFactory, fake_realtime: FakeRealtime
) -> None:
    env, admin = await setup_realtime(start_gateway, fake_realtime, realtime_idle_timeout=0.3)
    async with connect(
        f"ws://127.0.0.1:{env.gw.port}/v1/realtime?model=rt",
        additional_headers={"Authorization": f"Bearer {env.key}"},
    ) as ws:
        events = await recv(ws, "error")
        assert events[-1]["error"]["code"] == "idle_timeout"
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 1000 and ws.close_reason == "idle timeout"
    await admin.aclose()


async def test_twenty_sessions_without_cross_talk(rt: RT) -> None:
    async def one(i: int) -> str:
        session = await rt.session(instructions=f"marker-{i}")
        async with connect(
            session["websocket_url"],
            additional_headers={"Authorization": f"Bearer {session['client_secret']['value']}"},
        ) as ws:
            await recv(ws, "session.updated")
            for _ in range(3):
                await ws.send(json.dumps({"type": "response.create"}))
                events = await recv(ws, "response.done")
                audio = base64.b64decode(
                    next(e for e in events if e["type"] == "response.output_audio.delta")["delta"]
                )
                assert audio == f"marker-{i}".encode()
            return f"marker-{i}"

    assert await asyncio.gather(*(one(i) for i in range(20))) == [f"marker-{i}" for i in range(20)]


async def test_a_store_outage_mid_session_neither_stops_it_nor_loses_a_charge(
    start_gateway: GatewayFactory, fake_realtime: FakeRealtime
) -> None:
    store = MemoryStore()
    flaky = Down(store)
    env, admin = await setup_realtime(start_gateway, fake_realtime, store=cast(Store, flaky))
    try:
        budgeted = await admin.create_key(name="budgeted", max_budget=100)
        flaky.only = budgeted["id"]  # once down: the key's document, where its spend is
        ctx = env.gw.ctx
        assert ctx is not None
        async with env.connect(budgeted["key"]) as ws:
            await recv(ws, "session.created")
            await ws.send(json.dumps({"type": "response.create"}))
            await recv(ws, "response.done")
            await settled(env.gw)
            one = (await store.get("keys", budgeted["id"]) or {})["spend"]
            assert one > 0
            flaky.down = True
            for _ in range(2):  # the relay goes on while the charges cannot be made
                await ws.send(json.dumps({"type": "response.create"}))
                await recv(ws, "response.done")
            flaky.down = False
        await settled(env.gw)
        await ctx.limiter.flush()
        spent = (await store.get("keys", budgeted["id"]) or {})["spend"]
        assert spent == pytest.approx(3 * one)  # the two deferred charges, once each
    finally:
        await admin.aclose()
