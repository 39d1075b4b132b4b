"""An in-process provider with deterministic output, for demos, notebooks and load tests.

Options (provider ``options``, checked when written: core/schemas.py MockOptions):
``latency_ms`` before the answer, ``chunk_ms`` between streamed chunks, ``words`` (reply
length; default: echo the last user message), ``dimensions`` (embedding size by default).
Work per call is linear in what it returns, and what it returns is bounded. A request for
JSON, a JSON schema or a function call gets one (mock_shapes.py); the fields it ignores
are named in x-conduit-dropped-params.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import secrets
import struct
import time
from collections.abc import AsyncIterator

import orjson
from pydantic import ValidationError

from conduit_tornado.core.schemas import MockOptions
from conduit_tornado.routing.catalog import Provider
from conduit_tornado.routing.realtime import MOCK_ANSWER, MockRealtimeSocket, RealtimeSocket
from conduit_tornado.routing.upstream import ProviderError, Timeouts, Upstream

from . import mock_shapes
from .base import (
    Adapter,
    ByteStream,
    ChunkStream,
    Json,
    Upload,
    estimate_tokens,
    open_stream,
    prompt_text,
)

log = logging.getLogger("conduit.mock")
#: Most numbers one embeddings answer holds (inputs x dimensions): a real provider's
#: answer is bounded by its own limits, the mock's by this.
MAX_EMBEDDING_VALUES = 1 << 20

# The smallest valid PNG (1x1, transparent): what mock image generation returns.
TINY_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
SPEECH_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


def _reply(body: Json, words: int | None) -> str:
    last = ""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            last = (
                content
                if isinstance(content, str)
                else " ".join(
                    t
                    for p in (content if isinstance(content, list) else [])
                    if isinstance(p, dict) and isinstance(t := p.get("text"), str)
                )
            )
            break
    text = f"Mock reply: {last}".strip()
    if words is not None:
        base = text.split() or ["mock"]
        text = " ".join(base[i % len(base)] for i in range(words))
    return text


class MockAdapter(Adapter):
    supports_n = False
    free = True

    def __init__(self, provider: Provider, upstream: Upstream) -> None:
        super().__init__(provider, upstream)
        try:
            self.options = MockOptions.model_validate(provider.options)
        except ValidationError as exc:  # stored before options were checked on write
            log.warning("mock provider %s: options ignored: %s", provider.name, exc)
            self.options = MockOptions()
        self._latency = self.options.latency_ms / 1000
        self._chunk_delay = self.options.chunk_ms / 1000

    @staticmethod
    def dropped(body: Json) -> list[str]:
        return mock_shapes.dropped(body)

    async def chat(self, body: Json, model: str, t: Timeouts) -> Json:
        await asyncio.sleep(self._latency)
        text = _reply(body, self.options.words)
        # Tools and response_format shape the answer (mock_shapes.py says how).
        call = mock_shapes.tool_call(body)
        message: Json = {"role": "assistant", "content": text, "refusal": None}
        if call is not None:
            message.update(content=None, tool_calls=[call])
            text = call["function"]["arguments"]
        else:
            text = mock_shapes.structured_text(body, text) or text
            message["content"] = text
        prompt = estimate_tokens(prompt_text(body))
        completion = len(text.split())
        return {
            "id": "chatcmpl-mock" + secrets.token_hex(8),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "stop" if call is None else "tool_calls",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }

    async def chat_stream(self, body: Json, model: str, t: Timeouts) -> ChunkStream:
        whole = await self.chat(body, model, t)
        delay = self._chunk_delay
        base = {
            "id": whole["id"],
            "object": "chat.completion.chunk",
            "created": whole["created"],
            "model": model,
        }
        message = whole["choices"][0]["message"]
        finish = whole["choices"][0]["finish_reason"]
        calls = message.get("tool_calls") or []
        # A call's arguments stream in pieces as a provider's do; text word by word.
        words = (calls[0]["function"]["arguments"] if calls else message["content"]).split(" ")

        def piece(i: int, word: str) -> Json:
            text = word if i == 0 else " " + word
            if not calls:
                return {"content": text}
            return {"tool_calls": [{"index": 0, "function": {"arguments": text}}]}

        async def events() -> AsyncIterator[Json]:
            first: Json = {"role": "assistant", "content": None if calls else ""}
            if calls:
                call = calls[0]
                first["tool_calls"] = [
                    {
                        "index": 0,
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": call["function"]["name"], "arguments": ""},
                    }
                ]
            yield {**base, "choices": [{"index": 0, "delta": first, "finish_reason": None}]}
            for i, word in enumerate(words):
                if delay:
                    await asyncio.sleep(delay)
                yield {
                    **base,
                    "choices": [{"index": 0, "delta": piece(i, word), "finish_reason": None}],
                }
            yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
            yield {**base, "choices": [], "usage": whole["usage"]}

        async def close() -> None:
            return None

        return await open_stream(events(), close, t.first_byte)

    async def embeddings(self, body: Json, model: str, t: Timeouts) -> Json:
        await asyncio.sleep(self._latency)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        if inputs and isinstance(inputs[0], int):
            inputs = [inputs]
        dims = body.get("dimensions") or self.options.dimensions
        if not isinstance(dims, int) or dims < 1 or len(inputs) * dims > MAX_EMBEDDING_VALUES:
            raise ProviderError(
                "client",
                f"The mock provider returns at most {MAX_EMBEDDING_VALUES} numbers per request "
                "(inputs x dimensions).",
                param="dimensions",
            )
        data = []
        tokens = 0
        for i, item in enumerate(inputs):
            text = item if isinstance(item, str) else " ".join(map(str, item))
            tokens += estimate_tokens(text) if isinstance(item, str) else len(item)
            # An extendable-output hash: deterministic bytes, as many as asked, in one pass.
            seed = hashlib.shake_256(text.encode()).digest(dims * 4)
            values = [v / 2**32 - 0.5 for v in struct.unpack(f"<{dims}I", seed)]
            data.append({"object": "embedding", "index": i, "embedding": values})
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def images(self, body: Json, model: str, t: Timeouts) -> Json:
        await asyncio.sleep(self._latency)
        n = int(body.get("n") or 1)
        encoded = base64.b64encode(TINY_PNG).decode()
        as_url = body.get("response_format", "url") == "url"
        item = {"url": "data:image/png;base64," + encoded} if as_url else {"b64_json": encoded}
        return {
            "created": int(time.time()),
            "data": [dict(item, revised_prompt=body.get("prompt")) for _ in range(n)],
        }

    async def image_edit(
        self,
        kind: str,
        fields: list[tuple[str, str]],
        uploads: list[Upload],
        model: str,
        t: Timeouts,
    ) -> Json:
        values = dict(fields)
        answer = await self.images(
            {k: values[k] for k in ("n", "response_format", "prompt") if k in values}, model, t
        )
        if "prompt" not in values:  # a variation: nothing was revised
            for item in answer["data"]:
                item.pop("revised_prompt", None)
        return answer

    async def transcribe(
        self, kind: str, fields: list[tuple[str, str]], upload: Upload, model: str, t: Timeouts
    ) -> tuple[bytes, str]:
        await asyncio.sleep(self._latency)
        text = f"Mock {kind[:-1]} of {upload.size} bytes."
        fmt = dict(fields).get("response_format", "json")
        if fmt in ("text", "srt", "vtt"):
            return text.encode(), "text/plain; charset=utf-8"
        if fmt == "verbose_json":
            return orjson.dumps(
                {
                    "task": kind[:-1],
                    "language": "english",
                    "duration": 1.0,
                    "text": text,
                    "segments": [],
                }
            ), "application/json"
        return orjson.dumps({"text": text}), "application/json"

    async def speech(self, body: Json, model: str, t: Timeouts) -> ByteStream:
        await asyncio.sleep(self._latency)
        delay = self._chunk_delay
        size = max(1, len(str(body.get("input", "")))) * 64  # deterministic "audio" bytes
        content_type = SPEECH_TYPES.get(str(body.get("response_format", "mp3")), "audio/mpeg")

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, size, 1024):
                if delay:
                    await asyncio.sleep(delay)
                yield bytes((i % 251) for i in range(start, min(size, start + 1024)))

        async def close() -> None:
            return None

        return ByteStream(content_type, chunks(), close)

    async def realtime(self, model: str, t: Timeouts, max_message: int) -> RealtimeSocket:
        return MockRealtimeSocket(model)

    async def realtime_transcription(
        self, model: str, t: Timeouts, max_message: int
    ) -> RealtimeSocket:
        return MockRealtimeSocket(model, transcription=True)

    async def realtime_call(
        self, sdp: str, session: Json, model: str, t: Timeouts
    ) -> tuple[str, str]:
        return MOCK_ANSWER, "rtc_mock" + secrets.token_hex(8)

    async def realtime_sideband(
        self, call_id: str, t: Timeouts, max_message: int
    ) -> RealtimeSocket:
        return MockRealtimeSocket("mock")

    async def realtime_hangup(self, call_id: str, t: Timeouts) -> None:
        return None
