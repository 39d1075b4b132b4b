"""Realtime transcription sessions: a GA client secret with session.type 'transcription',
used once at /v1/realtime?intent=transcription, each transcribed turn charged (tokens or
audio minutes), with the official SDK as client and a fake OpenAI realtime on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import platform
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
import pytest_asyncio
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from conduit_tornado import Gateway
from tests.conftest import GatewayFactory
from tests.fakes.realtime import FakeRealtime
from tests.realtime_setup import RT, recv, setup_realtime

pytestmark = pytest.mark.asyncio
platform.platform()  # read by the SDK's connect() on the loop: warm its cache at import

# The fake's token usage (20 text + 100 audio in, 8 text out) at gpt-4o-transcribe's
# bundled prices ($2.50 / $6 in, $10 out per million).
TOKENS_COST = (20 * 2.5 + 100 * 6.0 + 8 * 10.0) / 1e6
AUDIO = base64.b64encode(b"\x01\x00" * 400).decode()


def _transcription(model: str, **more: Any) -> dict[str, Any]:
    return {
        "type": "transcription",
        "audio": {"input": {"transcription": {"model": model, **more}}},
    }


@pytest_asyncio.fixture
async def env(start_gateway: GatewayFactory, fake_realtime: FakeRealtime) -> AsyncIterator[RT]:
    rt, admin = await setup_realtime(start_gateway, fake_realtime)
    await admin.create_provider(name="mock", type="mock")
    for name, provider, model in [
        ("transcribe", "oai", "gpt-4o-transcribe"),
        ("whisper-rt", "oai", "whisper-1"),
        ("transcribe-mock", "mock", "m"),
    ]:
        await admin.create_model(name=name, deployments=[{"provider": provider, "model": model}])
    yield rt
    await admin.aclose()


def _client(env: RT, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=env.gw.url + "/v1", api_key=key, max_retries=0)


async def _logs(gw: Gateway, count: int) -> list[dict[str, Any]]:
    assert gw.ctx is not None
    for _ in range(200):
        await gw.ctx.recorder.flush()
        logs = await gw.ctx.store.find("request_logs", {"endpoint": "realtime"})
        if len(logs) >= count:
            return logs
        await asyncio.sleep(0.025)
    raise AssertionError(f"{count} transcription turns were not charged")


async def test_a_transcription_secret_opens_one_session_charged_by_tokens(env: RT) -> None:
    async with _client(env, env.key) as client:
        minted = await client.realtime.client_secrets.create(
            session=_transcription("transcribe", language="en")  # type: ignore[arg-type]
        )
    assert minted.session.type == "transcription"
    async with (
        _client(env, minted.value) as browser,
        browser.realtime.connect(extra_query={"intent": "transcription"}) as conn,
    ):
        assert (await conn.recv()).type == "session.created"
        assert (await conn.recv()).type == "session.updated"
        await conn.send({"type": "input_audio_buffer.append", "audio": AUDIO})
        await conn.send({"type": "input_audio_buffer.commit"})
        async for event in conn:
            if event.type == "conversation.item.input_audio_transcription.completed":
                assert event.transcript == "gpt-4o-transcribe heard 800 bytes"
                break
    upstream = env.fake.conns[-1]
    assert upstream.query == {"intent": "transcription"}  # no model in the URL
    update = upstream.events[0]
    assert update["type"] == "session.update" and update["session"]["type"] == "transcription"
    # The provider is told its deployment's model, never the virtual name.
    assert update["session"]["audio"]["input"]["transcription"] == {
        "model": "gpt-4o-transcribe",
        "language": "en",
    }
    (entry,) = await _logs(env.gw, 1)
    assert entry["key_id"] == env.key_id and entry["model"] == "transcribe"
    assert entry["prompt_tokens"] == 120 and entry["completion_tokens"] == 8
    assert entry["cost"] == pytest.approx(TOKENS_COST)
    with pytest.raises(InvalidStatus) as again:  # single use
        async with connect(
            f"ws://127.0.0.1:{env.gw.port}/v1/realtime?intent=transcription",
            additional_headers={"Authorization": f"Bearer {minted.value}"},
        ):
            pass
    assert again.value.response.status_code == 401


async def test_a_key_session_names_its_model_and_is_charged_by_the_minute(env: RT) -> None:
    url = f"ws://127.0.0.1:{env.gw.port}/v1/realtime?intent=transcription&model=whisper-rt"
    async with connect(url, additional_headers={"Authorization": f"Bearer {env.key}"}) as ws:
        await recv(ws, "session.created")
        # Another model than the one the session was admitted for is refused here.
        await ws.send(json.dumps({"type": "session.update", "session": _transcription("rt")}))
        error = await recv(ws, "error")
        assert error[-1]["error"]["code"] == "model_not_allowed"
        await ws.send(
            json.dumps({"type": "session.update", "session": _transcription("whisper-rt")})
        )
        await recv(ws, "session.updated")
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        done = await recv(ws, "conversation.item.input_audio_transcription.completed")
        assert done[-1]["usage"] == {"type": "duration", "seconds": 2.5}
    sent = [e for e in env.fake.conns[-1].events if e["type"] == "session.update"]
    assert len(sent) == 1  # the refused one never reached the provider
    assert sent[0]["session"]["audio"]["input"]["transcription"]["model"] == "whisper-1"
    (entry,) = await _logs(env.gw, 1)
    assert entry["cost"] == pytest.approx(0.006 * 2.5 / 60)  # whisper-1: $0.006 a minute
    assert entry["media"] == {"audio_seconds": 2.5}


async def test_the_mock_transcribes(env: RT) -> None:
    async with _client(env, env.key) as client:
        minted = await client.realtime.client_secrets.create(
            session=_transcription("transcribe-mock")  # type: ignore[arg-type]
        )
    url = f"ws://127.0.0.1:{env.gw.port}/v1/realtime?intent=transcription"
    async with connect(url, additional_headers={"Authorization": f"Bearer {minted.value}"}) as ws:
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": AUDIO}))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        done = await recv(ws, "conversation.item.input_audio_transcription.completed")
        assert done[-1]["transcript"] == "Mock transcript."
    (entry,) = await _logs(env.gw, 1)
    assert entry["cost"] == 0.0 and entry["prompt_tokens"] == 8


async def test_bad_transcription_sessions_are_refused(env: RT) -> None:
    async with _client(env, env.key) as client:
        for session, param in [
            ({"type": "transcription"}, "session.audio.input.transcription.model"),
            ({**_transcription("transcribe"), "model": "rt"}, "session.model"),
            (_transcription("nope"), None),
        ]:
            with pytest.raises((openai.BadRequestError, openai.NotFoundError)) as refused:
                await client.realtime.client_secrets.create(session=session)  # type: ignore[arg-type]
            if param:
                assert refused.value.body["param"] == param  # type: ignore[index]
        minted = await client.realtime.client_secrets.create(
            session=_transcription("transcribe")  # type: ignore[arg-type]
        )
    # A transcription secret does not make WebRTC calls.
    async with _client(env, minted.value) as browser:
        with pytest.raises(openai.BadRequestError) as call:
            await browser.realtime.calls.create(sdp="v=0\r\nm=audio 9 UDP 0\r\n")
    assert call.value.body["param"] == "session.type"  # type: ignore[index]
    assert env.fake.conns == [] and env.fake.calls == {}
