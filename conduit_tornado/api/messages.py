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
from typing import Any

from conduit_tornado.core.errors import ApiError
from conduit_tornado.formats.messages import (
    EventStream,
    check_params,
    error_body,
    message_of,
    to_chat,
)
from conduit_tornado.routing.catalog import ModelRoute
from conduit_tornado.routing.providers.anthropic import cache_write_1h
from conduit_tornado.routing.providers.base import (
    ChunkStream,
    Json,
    Usage,
    estimate_tokens,
    prompt_text,
)
from conduit_tornado.routing.router import Target
from conduit_tornado.routing.upstream import Timeouts

from .base import ClientHandler, dumps, model_name, reason_phrase, resolve_model
from .proxy import ProxyHandler, named_events, note_chunk


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
            self.error_headers(exc)
            message = exc.message
        elif status_code >= 500:
            message = (
                f"The server had an error processing your request (request id {self.request_id})."
            )
        else:
            message = reason_phrase(status_code)
        self.set_header("Content-Type", "application/json")
        self.finish(dumps(error_body(status_code, message)))


def native_usage(usage: Any) -> Usage:
    """Anthropic's usage as the gateway counts it: every input token, with cache reads
    and cache writes (billed above input) told apart for pricing."""
    usage = usage if isinstance(usage, dict) else {}
    read = int(usage.get("cache_read_input_tokens") or 0)
    written = int(usage.get("cache_creation_input_tokens") or 0)
    return Usage(
        prompt_tokens=int(usage.get("input_tokens") or 0) + read + written,
        completion_tokens=int(usage.get("output_tokens") or 0),
        cached_tokens=read,
        cache_write_tokens=written,
        cache_write_1h_tokens=cache_write_1h(usage),
    )


class MessagesHandler(ProxyHandler, AnthropicShapes):
    """Relayed as it came to providers that speak the Messages API (anthropic), so
    prompt caching, thinking, documents and server tools keep working; translated
    through chat for every other provider."""

    endpoint = "messages"

    async def post(self) -> None:
        body = self.json_body()
        if body.get("max_tokens") is None:  # what Anthropic itself refuses, before routing
            to_chat(body)
        route = self.resolve(
            {"model": body.get("model"), "user": _user(body), "stream": body.get("stream")}
        )
        check_params(body)  # for native providers too, whose bodies go upstream as sent
        native = any(a.native_messages for a in self.ctx.router.adapters(route))
        try:
            chat: Json | None = to_chat(body)
            problem = None
        except ApiError as exc:
            if not native:
                raise
            chat, problem = None, exc  # only a native provider can take it
        await self.admit(chat or {"messages": [{"role": "user", "content": str(body)}]})
        relayed = {k: v for k, v in body.items() if k not in ("model", "stream")}
        beta = self.request.headers.get("anthropic-beta")
        if body.get("stream"):
            await self._stream(route, relayed, chat, problem, beta)
            return

        async def call(target: Target, t: Timeouts) -> tuple[Json, bool]:
            if target.adapter.native_messages:
                return await target.adapter.messages(relayed, target.model, t, beta), True
            if chat is None:
                assert problem is not None
                raise problem
            return await target.adapter.chat(chat, target.model, t), False

        (result, as_sent), self.outcome = await self.ctx.router.run(route, call)
        reported = result.get("model")
        assert self.entry is not None
        if as_sent:
            usage = native_usage(result.get("usage"))
            answer = {**result, "model": self.entry["model"]}
        else:
            assert chat is not None
            usage = self.usage_of(result, chat)
            answer = message_of(result, self.entry["model"], usage)
        cost = self.account(usage, self.outcome, reported if isinstance(reported, str) else None)
        self.answer_headers(self.outcome, cost)
        self.send_json(answer)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.log_error(status_code, kwargs.get("exc_info", (None, None, None))[1])
        AnthropicShapes.write_error(self, status_code, **kwargs)

    async def _stream(
        self,
        route: ModelRoute,
        relayed: Json,
        chat: Json | None,
        problem: ApiError | None,
        beta: str | None,
    ) -> None:
        async def open_stream(target: Target, t: Timeouts) -> tuple[ChunkStream, bool]:
            if target.adapter.native_messages:
                opened = await target.adapter.messages_stream(relayed, target.model, t, beta)
                return opened, True
            if chat is None:
                assert problem is not None
                raise problem
            return await target.adapter.chat_stream(chat, target.model, t), False

        (stream, as_sent), self.outcome = await self.ctx.router.run(route, open_stream)
        outcome = self.outcome
        self.start_events(outcome)
        assert self.entry is not None
        model = self.entry["model"]
        prompt = estimate_tokens(prompt_text(chat)) if chat is not None else 0
        events = EventStream(model, prompt)
        seen: dict[str, Any] = {"usage": None, "reported": None, "chars": 0, "native": {}}

        def usage() -> Usage:
            found = seen["usage"]
            if isinstance(found, Usage):
                return found
            return Usage(prompt, math.ceil(seen["chars"] / 4), estimated=True)

        def relabelled(batch: list[Json]) -> list[Json]:
            counts: Json = seen["native"]
            for event in batch:
                kind = event.get("type")
                if kind == "message_start" and isinstance(event.get("message"), dict):
                    message = event["message"]
                    seen["reported"] = message.get("model")
                    counts.update(message.get("usage") or {})
                    event["message"] = {**message, "model": model}
                elif kind == "message_delta":
                    counts.update(
                        {k: v for k, v in (event.get("usage") or {}).items() if v is not None}
                    )
                    seen["usage"] = native_usage(counts)
                elif kind == "content_block_delta":
                    delta = event.get("delta") or {}
                    seen["chars"] += len(str(delta.get("text") or delta.get("partial_json") or ""))
            return batch

        def translated(batch: list[Json]) -> list[Json]:
            out: list[Json] = []
            for chunk in batch:
                note_chunk(seen, chunk)
                out += events.feed(chunk)
            return out

        async def pump() -> None:
            if not as_sent:
                await self.send_named(events.start())
            while (batch := await stream.next_batch()) is not None:
                out = relabelled(batch) if as_sent else translated(batch)
                if out:
                    await self.send_named(out)
            if not as_sent:
                await self.send_named(events.finish(usage()))

        def failed(error: ApiError) -> bytes:
            return named_events([{"type": "error", **error_body(error.status, error.message)}])

        await self.pump_events(stream, outcome, pump(), failed)
        self.account(usage(), outcome, seen["reported"])
        self.end_events()


def _user(body: Json) -> str | None:
    metadata = body.get("metadata")
    user = metadata.get("user_id") if isinstance(metadata, dict) else None
    return user if isinstance(user, str) else None


class CountTokensHandler(AnthropicShapes):
    """POST /v1/messages/count_tokens: the gateway's estimate (the one its limits use);
    chat backends have no counting endpoint."""

    async def post(self) -> None:
        body = self.json_body()
        # Counted for a model this key may use, as Anthropic counts for a model it serves.
        resolve_model(self.ctx, self.key, model_name(body.get("model")))
        chat = to_chat({"max_tokens": 1, **body})
        self.send_json({"input_tokens": estimate_tokens(prompt_text(chat))})
