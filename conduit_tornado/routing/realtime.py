"""The provider side of a realtime session: one WebSocket (or the mock), one interface.

The WebSocket stays on aiohttp (pyreqwest has no WebSocket client), configured like every
other outbound call: the same trust and client certificate (Upstream.session), the
environment's proxy, the checked headers and the ``Via`` chain.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson

from conduit_tornado.core import tracing, via

from .upstream import (
    ProviderError,
    Timeouts,
    Upstream,
    check_headers,
    classify_status,
    read_body,
)


@dataclass(frozen=True, slots=True)
class Frame:
    kind: str  # "text" | "binary" | "close"
    data: str | bytes | None = None
    code: int | None = None
    reason: str = ""


class RealtimeSocket(Protocol):
    async def send(self, data: str | bytes) -> None: ...

    async def receive(self) -> Frame: ...

    async def close(self, code: int, reason: str) -> None: ...


class AiohttpSocket:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws

    async def send(self, data: str | bytes) -> None:
        if isinstance(data, bytes):
            await self._ws.send_bytes(data)
        else:
            await self._ws.send_str(data)

    async def receive(self) -> Frame:
        msg = await self._ws.receive()
        if msg.type == aiohttp.WSMsgType.TEXT:
            return Frame("text", msg.data)
        if msg.type == aiohttp.WSMsgType.BINARY:
            return Frame("binary", msg.data)
        reason = msg.extra if isinstance(msg.extra, str) else ""
        return Frame("close", None, self._ws.close_code, reason)

    async def close(self, code: int, reason: str) -> None:
        await self._ws.close(code=code, message=reason.encode()[:120])


async def connect_ws(
    upstream: Upstream, pool: str, url: str, headers: dict[str, str], t: Timeouts, max_message: int
) -> AiohttpSocket:
    sent = {**headers, "Via": via.outgoing()}
    carried = tracing.outgoing.get()  # traceparent of the connect attempt's span, when tracing
    if carried:
        sent.update(carried)
    check_headers(sent)
    session = upstream.session(pool)
    try:
        # The deployment's deadlines bound the handshake: connecting, then the upgrade
        # answer as its first byte.
        async with asyncio.timeout(t.connect + (t.first_byte or t.total)):
            ws = await session.ws_connect(
                url,
                headers=sent,
                proxy=upstream.ws_proxy(url),
                heartbeat=20.0,
                max_msg_size=max_message,
                timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                autoping=True,
            )
    except aiohttp.WSServerHandshakeError as exc:
        raise classify_status(exc.status, f"realtime handshake refused ({exc.status})") from None
    except TimeoutError:
        raise ProviderError("timeout", "timed out opening the realtime socket") from None
    except aiohttp.ClientError:
        raise ProviderError("connect", "could not open the realtime socket") from None
    return AiohttpSocket(ws)


def _modalities(response: dict[str, Any], session: dict[str, Any]) -> list[Any]:
    """What a response is to hold: its own output_modalities (GA) or modalities (beta),
    else the session's; audio (with its transcript) when neither says."""
    for source in (response, session):
        for key in ("output_modalities", "modalities"):
            value = source.get(key)
            if isinstance(value, list) and value:
                return value
    return ["audio"]


class MockRealtimeSocket:
    """A realtime peer in process: echoes session updates, answers response.create with a
    little audio and its transcript (text alone when the response or the session asks for
    output_modalities ["text"]), and reports usage in response.done."""

    def __init__(self, model: str, *, transcription: bool = False) -> None:
        self._model = model
        self._transcription = transcription  # answers input_audio_buffer.commit
        self._out: asyncio.Queue[Frame] = asyncio.Queue()
        self._audio_bytes = 0
        self._session: dict[str, Any] = {"id": "sess_mock" + secrets.token_hex(6), "model": model}
        self._emit({"type": "session.created", "session": self._session})

    def _emit(self, event: dict[str, Any]) -> None:
        event.setdefault("event_id", "event_" + secrets.token_hex(8))
        self._out.put_nowait(Frame("text", orjson.dumps(event).decode()))

    async def send(self, data: str | bytes) -> None:
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._emit(
                {
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": "invalid JSON"},
                }
            )
            return
        kind = event.get("type")
        if kind == "session.update":
            self._session.update(event.get("session") or {})
            self._emit({"type": "session.updated", "session": self._session})
        elif kind == "input_audio_buffer.append":
            self._audio_bytes += len(base64.b64decode(event.get("audio", ""), validate=False))
        elif kind == "input_audio_buffer.commit" and self._transcription:
            item = "item_" + secrets.token_hex(6)
            audio_in = max(1, self._audio_bytes // 100)
            self._audio_bytes = 0
            self._emit(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item,
                    "content_index": 0,
                    "transcript": "Mock transcript.",
                    "usage": {
                        "type": "tokens",
                        "input_tokens": audio_in,
                        "output_tokens": 3,
                        "total_tokens": audio_in + 3,
                        "input_token_details": {"audio_tokens": audio_in, "text_tokens": 0},
                    },
                }
            )
        elif kind == "response.create":
            rid = "resp_" + secrets.token_hex(6)
            asked = event.get("response")
            audio = "audio" in _modalities(asked if isinstance(asked, dict) else {}, self._session)
            self._emit(
                {"type": "response.created", "response": {"id": rid, "status": "in_progress"}}
            )
            if audio:
                self._emit(
                    {
                        "type": "response.output_audio.delta",
                        "response_id": rid,
                        "delta": base64.b64encode(b"mock-audio").decode(),
                    }
                )
            self._emit(
                {
                    "type": "response.output_audio_transcript.delta"
                    if audio
                    else "response.output_text.delta",
                    "response_id": rid,
                    "delta": "Mock reply.",
                }
            )
            audio_in = self._audio_bytes // 100
            self._audio_bytes = 0
            usage = {
                "total_tokens": 10 + audio_in + 20,
                "input_tokens": 10 + audio_in,
                "output_tokens": 20,
                "input_token_details": {
                    "text_tokens": 10,
                    "audio_tokens": audio_in,
                    "cached_tokens": 0,
                },
                "output_token_details": (
                    {"text_tokens": 5, "audio_tokens": 15}
                    if audio
                    else {"text_tokens": 20, "audio_tokens": 0}
                ),
            }
            self._emit(
                {
                    "type": "response.done",
                    "response": {"id": rid, "status": "completed", "usage": usage},
                }
            )

    async def receive(self) -> Frame:
        return await self._out.get()

    async def close(self, code: int, reason: str) -> None:
        self._out.put_nowait(Frame("close", None, code, reason))


# -- WebRTC calls: the SDP offer relayed, the sideband socket, the hangup ---------------------

MAX_SDP = 64 * 1024  # an offer is a few kilobytes; anything near this is not one


def sdp_form(sdp: str, session: dict[str, Any]) -> tuple[str, bytes]:
    """The SDP offer and the session as OpenAI's multipart (``sdp`` as application/sdp,
    ``session`` as application/json): (content type, body)."""
    boundary = secrets.token_hex(16)
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="sdp"\r\n'
            f"Content-Type: application/sdp\r\n\r\n{sdp}\r\n"
            f'--{boundary}\r\nContent-Disposition: form-data; name="session"\r\n'
            f"Content-Type: application/json\r\n\r\n"
        ).encode()
        + orjson.dumps(session)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return f"multipart/form-data; boundary={boundary}", body


def call_id_of(location: str | None) -> str:
    """The call id at the end of the provider's Location header (/v1/realtime/calls/{id})."""
    call_id = (location or "").split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    if not call_id or len(call_id) > 128 or not call_id.isascii() or not call_id.isprintable():
        raise ProviderError("bad_response", "the provider's answer named no call")
    return call_id


async def create_call(
    upstream: Upstream,
    pool: str,
    url: str,
    headers: dict[str, str],
    t: Timeouts,
    sdp: str,
    session: dict[str, Any],
) -> tuple[str, str]:
    """POST the offer to the provider's /realtime/calls: (its SDP answer, its call id)."""
    content_type, body = sdp_form(sdp, session)

    async def pieces() -> AsyncIterator[bytes]:
        yield body

    response = await upstream.request(
        pool,
        "POST",
        url,
        t,
        stream=pieces(),
        length=len(body),
        headers={**headers, "Content-Type": content_type, "Accept": "application/sdp"},
    )
    location = response.headers.get("Location")
    answer = await read_body(response)
    if len(answer) > MAX_SDP or not answer.startswith(b"v=0"):
        raise ProviderError("bad_response", "the provider's answer is not an SDP answer")
    return answer.decode("utf-8", "replace"), call_id_of(location)


async def hangup_call(
    upstream: Upstream, pool: str, url: str, headers: dict[str, str], t: Timeouts
) -> None:
    response = await upstream.request(pool, "POST", url, t, headers=headers)
    await read_body(response)


MOCK_ANSWER = (
    "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=setup:active\r\n"
    "a=rtpmap:111 opus/48000/2\r\n"
)
