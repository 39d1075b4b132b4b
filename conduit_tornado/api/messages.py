"""Anthropic's Messages API in front of every provider: POST /v1/messages (whole or
streamed) and POST /v1/messages/count_tokens.

Clients that speak Anthropic's API (the ``anthropic`` SDKs, coding agents) authenticate
with ``x-api-key: condt_...`` (or a Bearer header) and get Anthropic's shapes back,
errors included, on these routes only. Every backend is reached through its chat adapter
(formats/messages.py translates both ways), with the same keys, limits, routing, usage,
cost and request log as chat.
"""

from __future__ import annotations

import math
import time
from typing import Any

import orjson

from conduit_tornado.core.errors import ApiError
from conduit_tornado.formats.messages import EventStream, error_body, message_of, to_chat
from conduit_tornado.routing.catalog import ModelRoute
from conduit_tornado.routing.providers.base import (
    ChunkStream,
    Json,
    Usage,
    estimate_tokens,
    prompt_text,
)
from conduit_tornado.routing.router import Target
from conduit_tornado.routing.upstream import Timeouts

from .base import ClientHandler, dumps
from .proxy import ProxyHandler


def _frames(events: list[Json]) -> bytes:
    return b"".join(
        b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events
    )


class AnthropicShapes(ClientHandler):
    """Anthropic's key header and error envelope, for the routes that speak its API."""

    async def authenticate(self) -> None:
        if "Authorization" not in self.request.headers:
            key = self.request.headers.get("x-api-key")
            if key is not None:
                self.request.headers["Authorization"] = f"Bearer {key}"
        await super().authenticate()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            for name, value in exc.headers.items():
                self.set_header(name, value)
            message = exc.message
        elif status_code >= 500:
            message = (
                f"The server had an error processing your request (request id {self.request_id})."
            )
        else:
            message = self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(dumps(error_body(status_code, message)))


class MessagesHandler(ProxyHandler, AnthropicShapes):
    endpoint = "messages"

    async def post(self) -> None:
        body = self.json_body()
        chat = to_chat(body)
        user = chat.get("user")
        route = self.resolve(
            {"model": body.get("model"), "user": user, "stream": body.get("stream")}
        )
        await self.admit(chat)
        if body.get("stream"):
            await self._stream(chat, route)
            return

        async def call(target: Target, t: Timeouts) -> Json:
            return await target.adapter.chat(chat, target.model, t)

        result, self.outcome = await self.ctx.router.run(route, call)
        usage = self.usage_of(result, chat)
        reported = result.get("model")
        cost = self.account(usage, self.outcome, reported if isinstance(reported, str) else None)
        self.answer_headers(self.outcome, cost)
        assert self.entry is not None
        self.send_json(message_of(result, self.entry["model"], usage))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if self.entry is not None:  # the request log, as ProxyHandler keeps it
            exc = kwargs.get("exc_info", (None, None, None))[1]
            self.entry["status"] = status_code
            if isinstance(exc, ApiError):
                self.entry.update(error_code=exc.code, error_type=exc.type)
            else:
                self.entry.update(error_code=None, error_type="server_error")
        AnthropicShapes.write_error(self, status_code, **kwargs)

    async def _stream(self, chat: Json, route: ModelRoute) -> None:
        async def open_stream(target: Target, t: Timeouts) -> ChunkStream:
            return await target.adapter.chat_stream(chat, target.model, t)

        stream, self.outcome = await self.ctx.router.run(route, open_stream)
        outcome = self.outcome
        self._headers["Content-Type"] = "text/event-stream; charset=utf-8"
        self.put_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.routing_headers(outcome)
        assert self.entry is not None
        prompt = estimate_tokens(prompt_text(chat))
        events = EventStream(self.entry["model"], prompt)
        seen: dict[str, Any] = {"usage": None, "reported": None, "chars": 0}

        def usage() -> Usage:
            found = seen["usage"]
            if isinstance(found, Usage):
                return found
            return Usage(prompt, math.ceil(seen["chars"] / 4), estimated=True)

        async def pump() -> None:
            await self._write(events.start())
            while (batch := await stream.next_batch()) is not None:
                out: list[Json] = []
                for chunk in batch:
                    if seen["reported"] is None and isinstance(chunk.get("model"), str):
                        seen["reported"] = chunk["model"]
                    if chunk.get("usage"):
                        seen["usage"] = Usage.from_openai(chunk["usage"])
                    for choice in chunk.get("choices") or ():
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            seen["chars"] += len(text)
                    out += events.feed(chunk)
                if out:
                    await self._write(out)
            await self._write(events.finish(usage()))

        def failed(error: ApiError) -> bytes:
            return _frames([{"type": "error", **error_body(error.status, error.message)}])

        self._last_write = time.monotonic()
        self._keepalive_tick()
        try:
            await self.run_relay(pump(), failed)
        finally:
            if self._keepalive is not None:
                self._keepalive.cancel()
            await stream.aclose()
        self.account(usage(), outcome, seen["reported"])
        if self._client_gone:
            self.done()
        else:
            self.finish()

    async def _write(self, events: list[Json]) -> None:
        self._last_write = time.monotonic()
        frames = _frames(events)
        if self._streaming:
            connection = self.request.connection
            assert connection is not None
            sent = connection.write(frames)
        else:
            self.write(frames)
            sent = self.flush()
            self._streaming = True
        if not sent.done() or sent.exception() is not None:
            await sent


class CountTokensHandler(AnthropicShapes):
    """POST /v1/messages/count_tokens: the gateway's estimate (the one its limits use);
    chat backends have no counting endpoint."""

    async def post(self) -> None:
        chat = to_chat({"max_tokens": 1, **self.json_body()})
        self.send_json({"input_tokens": estimate_tokens(prompt_text(chat))})
