"""Anthropic's Messages API, translated to and from OpenAI chat completions."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from conduit_tornado.routing.upstream import (
    ProviderError,
    SseReader,
    Timeouts,
    parse_event,
    sse_events,
)

from .base import (
    Adapter,
    ChunkStream,
    Json,
    Probe,
    function_tools,
    open_batches,
    open_stream,
    shape_checked,
    stop_sequences,
    tool_calls,
    tool_choice_name,
)

VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
#: OpenAI's reasoning_effort as Anthropic's output_config.effort.
EFFORT = {
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "xhigh",
}
#: What to_anthropic carries over (translated or as is); any other field a client sets is
#: named in the x-conduit-dropped-params header rather than lost without a word.
CARRIED = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "user",
        "stream",
        "stream_options",
        "n",
        "reasoning_effort",
    }
)
ERROR_KINDS = {
    "rate_limit_error": "rate_limit",
    "overloaded_error": "server",
    "api_error": "server",
}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _image(url: str) -> Json:
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[5:].split(";")[0] or "image/png"
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(content: Any) -> list[Json]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[Json] = []
    for part in content or []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif part.get("type") == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if isinstance(url, str):
                blocks.append(_image(url))
    return blocks


def _arguments(raw: Any) -> Any:
    if isinstance(raw, dict):
        return raw
    try:
        value = orjson.loads(raw or "{}")
    except orjson.JSONDecodeError:
        raise ProviderError(
            "client", "tool call arguments must be a JSON object", param="messages"
        ) from None
    return value if isinstance(value, dict) else {"value": value}


def _json_schema(fmt: Any) -> Json | None:
    """The schema of a json_schema response_format (the only kind Anthropic can enforce)."""
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return None
    spec = fmt.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return schema if isinstance(schema, dict) else None


def dropped_fields(body: Json) -> list[str]:
    """The chat fields a client set that the Messages API has no place for."""
    out = [k for k, v in body.items() if k not in CARRIED and v is not None]
    if "response_format" in out and _json_schema(body["response_format"]) is not None:
        out.remove("response_format")
    if "reasoning_effort" in body and body["reasoning_effort"] not in (None, *EFFORT):
        out.append("reasoning_effort")
    return sorted(out)


def to_anthropic(body: Json, model: str) -> Json:
    system: list[str] = []
    messages: list[Json] = []

    def push(role: str, blocks: list[Json]) -> None:
        if messages and messages[-1]["role"] == role:  # Anthropic wants alternating turns
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})

    for i, m in enumerate(body.get("messages") or []):
        role = m.get("role")
        if role in ("system", "developer"):
            system.append(_text(m.get("content")))
        elif role == "user":
            push("user", _blocks(m.get("content")))
        elif role == "assistant":
            blocks = _blocks(m.get("content"))
            for call_id, name, arguments in tool_calls(m, i):
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call_id,
                        "name": name,
                        "input": _arguments(arguments),
                    }
                )
            push("assistant", blocks)
        elif role == "tool":
            push(
                "user",
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": m.get("tool_call_id"),
                        "content": _text(m.get("content")),
                    }
                ],
            )
    out: Json = {
        "model": model,
        "messages": messages,
        "max_tokens": body.get("max_completion_tokens")
        or body.get("max_tokens")
        or DEFAULT_MAX_TOKENS,
    }
    if system:
        out["system"] = "\n\n".join(s for s in system if s)
    # The Messages API no longer takes sampling parameters (temperature, top_p, top_k are
    # gone from its request type): they are left out, and named in DROPPED's header. How
    # hard the model thinks, and a JSON schema for its answer, go in output_config.
    config: Json = {}
    effort = EFFORT.get(str(body.get("reasoning_effort")))
    if effort:
        config["effort"] = effort
    schema = _json_schema(body.get("response_format"))
    if schema is not None:
        config["format"] = {"type": "json_schema", "schema": schema}
    if config:
        out["output_config"] = config
    # Anthropic refuses stop sequences that are only whitespace.
    stop = [s for s in stop_sequences(body) or () if s.strip()]
    if stop:
        out["stop_sequences"] = stop
    tools = function_tools(body)
    if tools:
        out["tools"] = [
            {
                "name": fn["name"],
                "description": fn.get("description", ""),
                "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
            }
            for fn in tools
        ]
    choice = body.get("tool_choice")
    if choice is not None:
        if choice == "required":
            out["tool_choice"] = {"type": "any"}
        elif isinstance(choice, dict):
            out["tool_choice"] = {"type": "tool", "name": tool_choice_name(choice)}
        else:
            out["tool_choice"] = {"type": str(choice)}
    if (
        body.get("parallel_tool_calls") is False
        and body.get("tools")
        and out.get("tool_choice", {}).get("type") != "none"  # refused there
    ):
        out.setdefault("tool_choice", {"type": "auto"})["disable_parallel_tool_use"] = True
    if body.get("user"):
        out["metadata"] = {"user_id": str(body["user"])}
    return out


def _usage(u: Json) -> Json:
    """Anthropic's counts as OpenAI usage. Cache writes ride in prompt_tokens_details as
    cache_write_tokens (the Responses API's name), so they are priced as writes."""
    cached = int(u.get("cache_read_input_tokens") or 0)
    written = int(u.get("cache_creation_input_tokens") or 0)
    prompt = int(u.get("input_tokens") or 0) + cached + written
    completion = int(u.get("output_tokens") or 0)
    out: Json = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached or written:
        details: Json = {"cached_tokens": cached, "cache_write_tokens": written}
        hour = cache_write_1h(u)
        if hour:
            details["cache_write_1h_tokens"] = hour
        out["prompt_tokens_details"] = details
    return out


def cache_write_1h(usage: Json) -> int:
    """Cache writes that live an hour (billed at 2x input): Anthropic splits
    cache_creation_input_tokens by lifetime in usage.cache_creation."""
    split = usage.get("cache_creation")
    return int(split.get("ephemeral_1h_input_tokens") or 0) if isinstance(split, dict) else 0


@shape_checked
def from_anthropic(data: Json, model: str) -> Json:
    text = []
    calls = []
    for block in data.get("content") or []:
        if block.get("type") == "text":
            text.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
    message: Json = {
        "role": "assistant",
        "content": "".join(text) if text or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    return {
        "id": "chatcmpl-" + str(data.get("id", "")),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": data.get("model", model),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": FINISH.get(data.get("stop_reason") or "", "stop"),
            }
        ],
        "usage": _usage(data.get("usage") or {}),
    }


class AnthropicAdapter(Adapter):
    supports_n = False
    default_base = "https://api.anthropic.com"
    base_url_hint = (
        "An anthropic provider's base_url has no /v1, as in https://api.anthropic.com: the "
        "gateway appends /v1/messages to it."
    )

    def _url(self) -> str:
        return f"{self.provider.base_url or self.default_base}/v1/messages"

    def _headers(self) -> dict[str, str]:
        headers = {"anthropic-version": VERSION, **self.provider.headers}
        if self.provider.api_key:
            headers["x-api-key"] = self.provider.api_key
        return headers

    def probe(self) -> Probe:
        return Probe(f"{self.provider.base_url or self.default_base}/v1/models", self._headers())

    native_messages = True

    @staticmethod
    def dropped(body: Json) -> list[str]:
        return dropped_fields(body)

    async def messages(self, body: Json, model: str, t: Timeouts, beta: str | None) -> Json:
        data = await self.upstream.request_json(
            self.provider.id,
            "POST",
            self._url(),
            t,
            json={**body, "model": model},
            headers=self._native_headers(beta),
        )
        if not isinstance(data, dict) or data.get("type") != "message":
            raise ProviderError("bad_response", "the provider answered with an unexpected shape")
        return data

    async def messages_stream(
        self, body: Json, model: str, t: Timeouts, beta: str | None
    ) -> ChunkStream:
        response = await self.upstream.request(
            self.provider.id,
            "POST",
            self._url(),
            t,
            json={**body, "model": model, "stream": True},
            headers=self._native_headers(beta),
        )
        reader = SseReader(response)

        async def next_batch() -> list[Json] | None:
            events = await reader.next_batch()
            return None if events is None else [parse_event(data) for _, data in events if data]

        async def close() -> None:
            await response.aclose()

        return await open_batches(next_batch, close, t.first_byte)

    def _native_headers(self, beta: str | None) -> dict[str, str]:
        # The client's beta flags (prompt caching, tools, thinking) go to Anthropic as sent.
        headers = self._headers()
        if beta:
            headers["anthropic-beta"] = beta
        return headers

    async def chat(self, body: Json, model: str, t: Timeouts) -> Json:
        data = await self.upstream.request_json(
            self.provider.id,
            "POST",
            self._url(),
            t,
            json=to_anthropic(body, model),
            headers=self._headers(),
        )
        if not isinstance(data, dict) or data.get("type") != "message":
            raise ProviderError("bad_response", "the provider answered with an unexpected shape")
        return from_anthropic(data, model)

    async def chat_stream(self, body: Json, model: str, t: Timeouts) -> ChunkStream:
        payload = {**to_anthropic(body, model), "stream": True}
        response = await self.upstream.request(
            self.provider.id, "POST", self._url(), t, json=payload, headers=self._headers()
        )
        created = int(time.time())

        async def events() -> AsyncIterator[Json]:
            base: Json = {
                "id": "",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
            }
            usage: Json = {}
            tool_index: dict[int, int] = {}  # content block index -> OpenAI tool call index
            arguments: dict[int, bool] = {}  # block index -> any argument text streamed

            def chunk(delta: Json, finish: str | None = None) -> Json:
                return {
                    **base,
                    "choices": [
                        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                    ],
                }

            async for name, data in sse_events(response):
                event = parse_event(data)
                kind = event.get("type", name)
                if kind == "message_start":
                    message = event.get("message") or {}
                    base["id"] = "chatcmpl-" + str(message.get("id", ""))
                    base["model"] = message.get("model", model)
                    usage.update(message.get("usage") or {})
                    yield chunk({"role": "assistant", "content": ""})
                elif kind == "content_block_start":
                    block = event.get("content_block") or {}
                    if block.get("type") == "tool_use":
                        tool_index[event["index"]] = len(tool_index)
                        yield chunk(
                            {
                                "tool_calls": [
                                    {
                                        "index": tool_index[event["index"]],
                                        "id": block.get("id"),
                                        "type": "function",
                                        "function": {"name": block.get("name"), "arguments": ""},
                                    }
                                ]
                            }
                        )
                elif kind == "content_block_delta":
                    delta = event.get("delta") or {}
                    if delta.get("type") == "text_delta":
                        yield chunk({"content": delta.get("text", "")})
                    elif delta.get("type") == "input_json_delta":
                        if delta.get("partial_json"):
                            arguments[event.get("index", 0)] = True
                        yield chunk(
                            {
                                "tool_calls": [
                                    {
                                        "index": tool_index.get(event.get("index", 0), 0),
                                        "function": {"arguments": delta.get("partial_json", "")},
                                    }
                                ]
                            }
                        )
                elif kind == "content_block_stop" and event.get("index") in tool_index:
                    index = event["index"]
                    if not arguments.get(index):
                        # A call without arguments streams partial_json "": say {} so
                        # clients parse an object, as the whole answer would give.
                        call = {"index": tool_index[index], "function": {"arguments": "{}"}}
                        yield chunk({"tool_calls": [call]})
                elif kind == "message_delta":
                    usage.update(
                        {k: v for k, v in (event.get("usage") or {}).items() if v is not None}
                    )
                    reason = (event.get("delta") or {}).get("stop_reason")
                    if reason:
                        yield chunk({}, FINISH.get(reason, "stop"))
                elif kind == "message_stop":
                    yield {**base, "choices": [], "usage": _usage(usage)}
                    return
                elif kind == "error":
                    err = event.get("error") or {}
                    raise ProviderError(
                        ERROR_KINDS.get(err.get("type", ""), "server"),
                        str(err.get("message", "stream error"))[:500],
                    )

        async def close() -> None:
            response.release()

        return await open_stream(events(), close, t.first_byte)
