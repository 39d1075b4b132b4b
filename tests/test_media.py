"""Images and audio through the gateway, with the official SDK as client."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx2
import openai
import pytest

from tests.audio import wav_bytes
from tests.conftest import clear_of_minute_end
from tests.fakes.providers import PIXEL, SPEECH_CHUNKS, TRANSCRIPT, FakeProviders
from tests.proxy_setup import Wired, WiredFactory

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("model", ["dalle", "azure-dalle", "mock"])
async def test_image_generation(wired: Wired, model: str) -> None:
    async with wired.client() as client:
        raw = await client.images.with_raw_response.generate(
            model=model, prompt="a red fox", n=2, size="1024x1024"
        )
        images = raw.parse()
        assert len(images.data) == 2 and images.data[0].url
        b64 = await client.images.generate(
            model=model, prompt="a red fox", response_format="b64_json"
        )
        assert base64.b64decode(b64.data[0].b64_json or "")[:8] == b"\x89PNG\r\n\x1a\n"
    if model != "mock":
        assert float(raw.headers["x-conduit-cost-usd"]) == pytest.approx(
            2 * 0.04
        )  # dall-e-3 standard
        sent = wired.fake.requests[-1]
        assert sent.body["prompt"] == "a red fox" and sent.body["response_format"] == "b64_json"
        if model == "azure-dalle":
            assert sent.path == "/openai/deployments/dall-e-3/images/generations"
    async with httpx2.AsyncClient(
        base_url=wired.gateway.url, headers={"Authorization": f"Bearer {wired.key}"}
    ) as http:
        for bad in (
            {"model": model},
            {"model": model, "prompt": "x", "n": 11},
            {"model": model, "prompt": "x", "response_format": "gif"},
        ):
            assert (await http.post("/v1/images/generations", json=bad)).status_code == 400


@pytest.mark.parametrize("model", ["whisper", "azure-whisper"])
async def test_transcription_formats(wired: Wired, model: str) -> None:
    audio = wav_bytes(30.0, rate=8000, sample=b"\x01\x00")
    async with wired.client() as client:
        raw = await client.audio.transcriptions.with_raw_response.create(
            model=model,
            file=("speech.wav", audio, "audio/wav"),
            language="en",
            prompt="foxes",
            temperature=0.2,
        )
        assert raw.parse().text == TRANSCRIPT
        # Per audio minute from the WAV header: 30 s of whisper-1 at $0.006/min.
        assert float(raw.headers["x-conduit-cost-usd"]) == pytest.approx(0.003)
        sent = wired.fake.requests[-1].body
        assert sent["file"]["bytes"] == audio and sent["file"]["filename"] == "speech.wav"
        assert (
            sent["language"] == "en" and sent["prompt"] == "foxes" and sent["temperature"] == "0.2"
        )
        assert sent["model"] == "whisper-1"
        text = await client.audio.transcriptions.create(
            model=model, file=("s.wav", audio), response_format="text"
        )
        assert isinstance(text, str) and text.strip() == TRANSCRIPT
        srt = await client.audio.transcriptions.create(
            model=model, file=("s.wav", audio), response_format="srt"
        )
        assert isinstance(srt, str) and "-->" in srt
        verbose = await client.audio.transcriptions.create(
            model=model,
            file=("s.wav", audio),
            response_format="verbose_json",
            timestamp_granularities=["segment", "word"],
        )
        assert verbose.duration == 2.5
        assert wired.fake.requests[-1].body["timestamp_granularities[]"] == ["segment", "word"]
        # The SDK deprecates translations; the API still serves them.
        with pytest.warns(DeprecationWarning, match="deprecated"):
            translated = await client.audio.translations.create(model=model, file=("s.wav", audio))
        assert translated.text == TRANSCRIPT
    assert wired.fake.requests[-1].path.endswith("/audio/translations")


async def test_upload_errors_are_clean(wired_with: WiredFactory, fake: FakeProviders) -> None:
    w = await wired_with(max_audio_bytes=64 * 1024)
    gw = w.gateway
    auth = {"Authorization": f"Bearer {w.key}"}
    async with httpx2.AsyncClient(base_url=gw.url, headers=auth) as http:
        big = await http.post(
            "/v1/audio/transcriptions",
            data={"model": "whisper"},
            files={"file": ("a.wav", wav_bytes(10.0, rate=8000, sample=b"\x01\x00"))},
        )
        assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
        for content, ctype in [
            (
                b'--xyz\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper',
                "multipart/form-data; boundary=xyz",
            ),
            (b"plain", "text/plain"),
            (
                b"--xyz\r\nbroken header line\r\n\r\ndata\r\n--xyz--\r\n",
                "multipart/form-data; boundary=xyz",
            ),
        ]:
            r = await http.post(
                "/v1/audio/transcriptions", content=content, headers={"Content-Type": ctype}
            )
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_multipart", (
                content
            )
        missing = await http.post("/v1/audio/transcriptions", data={"model": "whisper"})
        assert missing.status_code == 400
        no_file = await http.post(
            "/v1/audio/transcriptions",
            data={"model": "whisper", "x": "y"},
            files={"other": ("a.txt", b"x")},
        )
        assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"
    assert fake.requests == []

    # An absurd boundary is refused from the headers alone: the gateway answers while the
    # client is still holding back almost all of its declared body.
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    boundary = "b" * 10_000  # (past 64 KB of headers, Tornado itself drops the connection)
    writer.write(
        f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {w.key}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: 900000\r\n\r\n".encode()
        + b"--"
        + boundary.encode()[:1000]
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.close()
    assert (
        head.startswith(b"HTTP/1.1 400")
        or head.startswith(b"HTTP/1.1 413")
        or head.startswith(b"HTTP/1.1 431")
    )
    async with httpx2.AsyncClient(base_url=gw.url) as http:
        assert (await http.get("/health/live")).status_code == 200  # and it keeps serving


@pytest.mark.parametrize("model", ["tts", "azure-tts"])
async def test_speech_streams_before_the_upstream_finishes(wired: Wired, model: str) -> None:
    async with (
        wired.client() as client,
        client.audio.speech.with_streaming_response.create(
            model=model, voice="alloy", input="Hello there", response_format="mp3"
        ) as response,
    ):
        assert response.headers["content-type"] == "audio/mpeg"
        received = b""
        first_before_done = None
        async for chunk in response.iter_bytes():
            if first_before_done is None:
                first_before_done = not wired.fake.speech_done.is_set()
            received += chunk
    assert first_before_done is True
    assert received == b"".join(SPEECH_CHUNKS)
    assert wired.fake.requests[-1].body["input"] == "Hello there"


async def test_speech_stream_endpoint_raw_and_sse(wired: Wired) -> None:
    auth = {"Authorization": f"Bearer {wired.key}"}
    body = {"model": "tts", "voice": "alloy", "input": "Hello there"}
    async with httpx2.AsyncClient(base_url=wired.gateway.url, headers=auth) as http:
        raw = await http.post("/v1/audio/speech/stream", json=body)
        assert (
            raw.content == b"".join(SPEECH_CHUNKS) and raw.headers["content-type"] == "audio/mpeg"
        )
        assert "stream_format" not in wired.fake.requests[-1].body
        for extra, headers in (
            ({"stream_format": "sse"}, {}),
            ({}, {"Accept": "text/event-stream"}),
        ):
            sse = await http.post(
                "/v1/audio/speech/stream", json={**body, **extra}, headers=headers
            )
            assert sse.headers["content-type"].startswith("text/event-stream")
            events = [
                json.loads(line[6:]) for line in sse.text.splitlines() if line.startswith("data: ")
            ]
            audio = b"".join(
                base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta"
            )
            assert audio == b"".join(SPEECH_CHUNKS)
            assert (
                events[-1]["type"] == "speech.audio.done"
                and events[-1]["usage"]["input_tokens"] > 0
            )
        for bad in (
            {**body, "input": "x" * 4097},
            {**body, "voice": ""},
            {**body, "speed": 9},
            {**body, "response_format": "ogg"},
            {**body, "stream_format": "dots"},
        ):
            r = await http.post("/v1/audio/speech/stream", json=bad)
            assert r.status_code == 400, bad


async def test_speech_disconnect_cancels_upstream(wired: Wired) -> None:
    wired.fake.then(chunk_delay=0.3)
    async with (
        httpx2.AsyncClient(base_url=wired.gateway.url) as http,
        http.stream(
            "POST",
            "/v1/audio/speech",
            json={"model": "tts", "voice": "alloy", "input": "Hello"},
            headers={"Authorization": f"Bearer {wired.key}"},
        ) as r,
    ):
        async for _ in r.aiter_bytes():
            break
    for _ in range(100):
        if wired.fake.disconnected:
            break
        await asyncio.sleep(0.05)
    assert wired.fake.disconnected == 1


async def test_media_routes_obey_keys_limits_and_logs(wired: Wired) -> None:
    await clear_of_minute_end()
    limited = (await wired.admin.create_key(name="m", allowed_models=["tts"], rpm=1))["key"]
    async with openai.AsyncOpenAI(
        base_url=wired.gateway.url + "/v1", api_key=limited, max_retries=0
    ) as client:
        with pytest.raises(openai.PermissionDeniedError):
            await client.images.generate(model="dalle", prompt="x")
        async with client.audio.speech.with_streaming_response.create(
            model="tts", voice="alloy", input="Hi"
        ) as r:
            await r.read()
        with pytest.raises(openai.RateLimitError):
            await client.audio.speech.create(model="tts", voice="alloy", input="Hi")
    ctx = wired.gateway.ctx
    assert ctx is not None
    await ctx.recorder.flush()
    logs = await ctx.store.find("request_logs", {"endpoint": "audio.speech", "status": 200})
    assert len(logs) == 1 and logs[0]["media"]["characters"] == 2
    assert logs[0]["cost"] == pytest.approx(0.015 * 2 / 1000)


async def test_pixel_is_valid() -> None:
    assert base64.b64decode(PIXEL)[:4] == b"\x89PNG"
