"""Anthropic's Messages API over chat completions: requests in, answers and streams out.

``to_chat`` turns a ``POST /v1/messages`` body into a chat completions body every adapter
understands; ``message_of`` and ``EventStream`` turn the chat answer, whole or as chunks,
into Anthropic's message object and its event sequence (``message_start`` ...
``message_stop``), as the official ``anthropic`` SDK reads them. What a chat backend
cannot carry (documents, server tools) is refused with a 400 rather than dropped.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from conduit_tornado.core.errors import ApiError
from conduit_tornado.routing.providers.base import Json, Usage

log = logging.getLogger("conduit.messages")
#: Anthropic's error type for each status, for its error envelope.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def error_body(status: int, message: str) -> Json:
    return {
        "type": "error",
        "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message},
    }


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _invalid(message: str) -> ApiError:
    return ApiError(400, message, code="invalid_request_error")


# -- request -------------------------------------------------------------------------------

#: Fields Anthropic checks whatever the backend: refused here before routing, since a
#: native relay would otherwise take them upstream unchecked. The guard keeps a body
#: with none of them at one set operation.
CHECKED = frozenset({"stream", "temperature", "top_p", "top_k", "tool_choice", "metadata"})
TOOL_CHOICES = frozenset({"auto", "any", "tool", "none"})


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_params(body: Json) -> None:
    """Anthropic's own 400s for the sampling and control fields, each only when present."""
    if CHECKED.isdisjoint(body):
        return
    stream = body.get("stream")
    if stream is not None and type(stream) is not bool:
        raise _invalid("stream: Input should be a valid boolean")
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None and not (_number(value) and 0 <= value <= 1):
            raise _invalid(f"{name}: Input should be a number from 0 to 1")
    top_k = body.get("top_k")
    if top_k is not None and not (type(top_k) is int and top_k >= 0):
        raise _invalid("top_k: Input should be a non-negative integer")
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise _invalid("metadata: Input should be a valid dictionary")
        user = metadata.get("user_id")
        if user is not None and not isinstance(user, str):
            raise _invalid("metadata.user_id: Input should be a valid string")
    choice = body.get("tool_choice")
    if choice is not None and _choice_kind(choice) in ("any", "tool"):
        # Forcing a tool use needs a tool to use: Anthropic refuses it, a chat backend
        # would answer an error of its own or ignore the choice.
        tools = body.get("tools")
        if not tools:
            raise _invalid("tool_choice: may only be specified while providing tools")
        if (
            choice["type"] == "tool"
            and isinstance(tools, list)
            and not any(isinstance(t, dict) and t.get("name") == choice["name"] for t in tools)
        ):
            raise _invalid(f"tool_choice.name: no tool named {choice['name']!r} in tools")


def to_chat(body: Json) -> Json:
    """Translate a Messages request; raise ApiError(400) on what cannot be translated."""
    most = body.get("max_tokens")
    if most is None:
        raise _invalid("max_tokens: Field required")
    if not isinstance(most, int) or isinstance(most, bool) or most < 1:
        raise _invalid("max_tokens: Input should be a positive integer")
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise _invalid("messages: Field required: at least one message")
    messages = _system(body.get("system"))
    for index, message in enumerate(raw):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise _invalid(f"messages.{index}.role: Input should be 'user' or 'assistant'")
        messages += _messages(message["role"], message.get("content"), f"messages.{index}")
    chat: Json = {"model": body.get("model"), "messages": messages, "max_completion_tokens": most}
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            chat[name] = body[name]
    stops = body.get("stop_sequences")
    if stops:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _invalid("stop_sequences: Input should be a list of strings")
        chat["stop"] = stops
    user = (
        (body.get("metadata") or {}).get("user_id")
        if isinstance(body.get("metadata"), dict)
        else None
    )
    if isinstance(user, str):
        chat["user"] = user
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
    choice = body.get("tool_choice")
    if choice is not None:
        _tool_choice(choice, chat)
    return chat


def _system(system: Any) -> list[Json]:
    if system is None:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    if isinstance(system, list):
        texts = []
        for index, block in enumerate(system):
            if not isinstance(block, dict) or block.get("type") != "text":
                raise _invalid(f"system.{index}: system blocks must be text blocks")
            texts.append(_text(block, f"system.{index}"))
        return [{"role": "system", "content": "\n\n".join(texts)}]
    raise _invalid("system: Input should be a string or a list of text blocks")


def _text(block: Json, where: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise _invalid(f"{where}.text: Input should be a valid string")
    return text


def _image(block: Json, where: str) -> Json:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "base64":
        media, data = source.get("media_type"), source.get("data")
        if not isinstance(media, str) or not isinstance(data, str):
            raise _invalid(f"{where}.source: base64 images need media_type and data")
        return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
    if (
        isinstance(source, dict)
        and source.get("type") == "url"
        and isinstance(source.get("url"), str)
    ):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise _invalid(f"{where}.source: an image source must be base64 or url")


def _messages(role: str, content: Any, where: str) -> list[Json]:
    """One Anthropic message as chat messages: tool results become tool messages, placed
    before the rest of the user's turn as chat expects."""
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise _invalid(f"{where}.content: Input should be a string or a list of blocks")
    parts: list[Json] = []
    calls: list[Json] = []
    results: list[Json] = []
    for index, block in enumerate(content):
        at = f"{where}.content.{index}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": _text(block, at)})
        elif kind == "image" and role == "user":
            parts.append(_image(block, at))
        elif kind == "tool_use" and role == "assistant":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise _invalid(f"{at}: tool_use blocks need an id and a name")
            calls.append(
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {
                        "name": block["name"],
                        "arguments": json.dumps(block.get("input") or {}),
                    },
                }
            )
        elif kind == "tool_result" and role == "user":
            if not isinstance(block.get("tool_use_id"), str):
                raise _invalid(f"{at}.tool_use_id: Field required")
            results.append(
                {
                    "role": "tool",
                    "tool_call_id": block["tool_use_id"],
                    "content": _result_text(block.get("content"), at),
                }
            )
        elif kind in ("thinking", "redacted_thinking") and role == "assistant":
            continue  # a chat backend cannot take reasoning back; its answer follows it
        else:
            raise _invalid(
                f"{at}: blocks of type {kind!r} are not supported for this model's backend"
            )
    out: list[Json] = list(results)
    if role == "assistant":
        text = "".join(p["text"] for p in parts)
        if text or calls:
            message: Json = {"role": "assistant", "content": text or None}
            if calls:
                message["tool_calls"] = calls
            out.append(message)
    elif parts:
        only_text = all(p["type"] == "text" for p in parts)
        out.append(
            {"role": "user", "content": "".join(p["text"] for p in parts) if only_text else parts}
        )
    return out


def _result_text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            _text(block, f"{where}.content.{i}")
            for i, block in enumerate(content)
            if isinstance(block, dict) and block.get("type") == "text"
        )
    raise _invalid(f"{where}.content: Input should be a string or a list of blocks")


def _tools(tools: Any) -> list[Json]:
    if not isinstance(tools, list):
        raise _invalid("tools: Input should be a valid list")
    out = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise _invalid(f"tools.{index}.name: Field required")
        if tool.get("type") not in (None, "custom"):
            raise _invalid(
                f"tools.{index}.type: server tools ({tool.get('type')}) run inside "
                "Anthropic's platform; this model's backend can only call custom tools"
            )
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise _invalid(f"tools.{index}.input_schema: Field required")
        function: Json = {"name": tool["name"], "parameters": schema}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def _choice_kind(choice: Any) -> str:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind not in TOOL_CHOICES:
        raise _invalid("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    if kind == "tool" and not isinstance(choice.get("name"), str):
        raise _invalid("tool_choice.name: Field required")
    return str(kind)


def _tool_choice(choice: Any, chat: Json) -> None:
    kind = _choice_kind(choice)
    if kind == "auto":
        chat["tool_choice"] = "auto"
    elif kind == "any":
        chat["tool_choice"] = "required"
    elif kind == "none":
        chat["tool_choice"] = "none"
    else:
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    if choice.get("disable_parallel_tool_use") and kind != "none":
        chat["parallel_tool_calls"] = False


# -- answers -------------------------------------------------------------------------------


def usage_object(usage: Usage) -> Json:
    """Anthropic counts cached input apart: input_tokens is what was not read from cache."""
    return {
        "input_tokens": max(
            0, usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens
        ),
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
    }


def _input(arguments: Any) -> Json:
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) and arguments else {}
    except json.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def message_of(result: Json, model: str, usage: Usage) -> Json:
    """A chat completion as Anthropic's message object."""
    choices = result.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    content: list[Json] = []
    text = message.get("content")
    if isinstance(text, list):
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    if text:
        content.append({"type": "text", "text": text})
    # Anthropic has no refusal block: its own refusals are text with stop_reason "refusal".
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        content.append({"type": "text", "text": refusal})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or new_id("toolu"),
                "name": function.get("name", ""),
                "input": _input(function.get("arguments")),
            }
        )
    return {
        "id": new_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "refusal"
        if refusal
        else STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": usage_object(usage),
    }


# -- streams -------------------------------------------------------------------------------


@dataclass
class _Block:
    index: int
    kind: str
    text: list[str] = field(default_factory=list)


class EventStream:
    """Chat chunks in, Anthropic stream events out.

    A block starts before its first delta and stops when the next block starts or the
    stream ends. Chat streams report usage only at their end, so ``message_start``
    carries the estimate the limits reserved and ``message_delta`` the real counts."""

    def __init__(self, model: str, estimated_input: int) -> None:
        self.model = model
        self.estimated_input = estimated_input
        self.finish_reason: Any = None
        self.refused = False
        self._open: _Block | None = None
        self._calls: dict[int, _Block] = {}
        self._next = 0

    def start(self) -> list[Json]:
        return [
            {
                "type": "message_start",
                "message": {
                    "id": new_id("msg"),
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": self.estimated_input,
                        "output_tokens": 0,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                    },
                },
            }
        ]

    def feed(self, chunk: Json) -> list[Json]:
        events: list[Json] = []
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                self.refused = True  # told as text, and as the stop reason at the end
                text = (text or "") + refusal
            if text:
                if self._open is None or self._open.kind != "text":
                    events += self._stop()
                    events += self._begin("text", {"type": "text", "text": ""})
                events.append(self._delta({"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    events += self._call(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def _begin(self, kind: str, block: Json) -> list[Json]:
        self._open = _Block(self._next, kind)
        self._next += 1
        return [{"type": "content_block_start", "index": self._open.index, "content_block": block}]

    def _delta(self, delta: Json) -> Json:
        assert self._open is not None
        return {"type": "content_block_delta", "index": self._open.index, "delta": delta}

    def _stop(self) -> list[Json]:
        current, self._open = self._open, None
        if current is None:
            return []
        events: list[Json] = []
        if current.kind == "tool_use" and not current.text:
            # A call without arguments: say so as an empty object, the way Anthropic's own
            # streams end such a block, so clients never parse "".
            events.append(
                {
                    "type": "content_block_delta",
                    "index": current.index,
                    "delta": {"type": "input_json_delta", "partial_json": "{}"},
                }
            )
        events.append({"type": "content_block_stop", "index": current.index})
        return events

    def _call(self, call: Json) -> list[Json]:
        events: list[Json] = []
        index = call.get("index", 0)
        function = call.get("function") or {}
        block = self._calls.get(index)
        if block is None:
            events += self._stop()
            events += self._begin(
                "tool_use",
                {
                    "type": "tool_use",
                    "id": call.get("id") or new_id("toolu"),
                    "name": function.get("name") or "",
                    "input": {},
                },
            )
            assert self._open is not None
            block = self._calls[index] = self._open
        arguments = function.get("arguments")
        if arguments:
            block.text.append(arguments)
            if self._open is not block:
                # Chat backends send each call's arguments before the next call starts;
                # a late fragment cannot go into a block Anthropic's stream has closed.
                log.warning("tool call %s: arguments after its block closed, not sent", index)
                return events
            events.append(self._delta({"type": "input_json_delta", "partial_json": arguments}))
        return events

    def finish(self, usage: Usage) -> list[Json]:
        events = self._stop()
        stop_reason = (
            "refusal"
            if self.refused
            else STOP_REASONS.get(self.finish_reason or "stop", "end_turn")
        )
        events.append(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": usage_object(usage),
            }
        )
        events.append({"type": "message_stop"})
        return events
