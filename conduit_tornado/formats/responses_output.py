"""The Responses API over chat completions, the answer side: a chat completion as the
Response object (its output items, status and usage, the request's parameters echoed as
OpenAI does), and output items back as chat messages for a follow-up's history."""

from __future__ import annotations

import time
from typing import Any

from conduit_tornado.routing.providers.base import Json, Usage

from .responses import append_item, call_ids, new_id


def usage_object(usage: Usage) -> Json:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def status_of(finish_reason: Any) -> tuple[str, Json | None]:
    """A chat finish reason as a Response status and its incomplete_details."""
    reason = _INCOMPLETE.get(finish_reason) if isinstance(finish_reason, str) else None
    if reason is not None:
        return "incomplete", {"reason": reason}
    return "completed", None


def output_text_part(text: str) -> Json:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def chat_shape_ok(result: Json) -> bool:
    """Whether a chat completion has the shape ``output_of`` reads (a provider answering
    otherwise is a bad response, not a crash)."""
    choices = result.get("choices")
    if choices is None:
        return True
    if not isinstance(choices, list) or (choices and not isinstance(choices[0], dict)):
        return False
    message = choices[0].get("message") if choices else None
    if message is None:
        return True
    if not isinstance(message, dict):
        return False
    if not isinstance(message.get("content"), str | list | None):
        return False
    if not isinstance(message.get("refusal"), str | None):
        return False
    calls = message.get("tool_calls")
    if calls is None:
        return True
    return isinstance(calls, list) and all(
        isinstance(c, dict) and isinstance(c.get("function") or {}, dict) for c in calls
    )


def output_of(result: Json) -> tuple[list[Json], str, Json | None]:
    """The output items, status and incomplete_details of a chat completion."""
    choices = result.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    output: list[Json] = []
    text = message.get("content")
    refusal = message.get("refusal")
    if isinstance(text, list):  # a few backends answer with parts
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    if text or refusal:
        content = [output_text_part(text)] if text else []
        if refusal:
            content.append({"type": "refusal", "refusal": refusal})
        output.append(
            {
                "type": "message",
                "id": new_id("msg"),
                "status": "completed",
                "role": "assistant",
                "content": content,
            }
        )
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        output.append(
            {
                "type": "function_call",
                "id": new_id("fc"),
                "call_id": call.get("id") or new_id("call"),
                "name": function.get("name", ""),
                "arguments": function.get("arguments") or "{}",
                "status": "completed",
            }
        )
    status, incomplete = status_of(choice.get("finish_reason"))
    return output, status, incomplete


def replayed(history: list[Json], items: list[Json], output: list[Json]) -> list[Json]:
    """The conversation after a turn, as chat: the history it continued, its input items
    and its output, as to_chat and as_messages made them when it ran."""
    messages = list(history)
    calls = call_ids(messages)
    for item in items:
        append_item(messages, item, calls, "previous_response_id")
    return messages + as_messages(output)


def as_messages(output: list[Json]) -> list[Json]:
    """Output items as chat messages, for the history of a follow-up."""
    messages: list[Json] = []
    calls: set[str] = set()
    for item in output:
        if item["type"] == "message":
            text = "".join(p.get("text") or p.get("refusal") or "" for p in item["content"])
            messages.append({"role": "assistant", "content": text})
        elif item["type"] == "function_call":
            append_item(messages, item, calls, "output")
    return messages


def _echoed_tool(tool: Json) -> Json:
    """A function tool as the Response lists it: every field present, null when unset."""
    return {
        "type": "function",
        "name": tool.get("name"),
        "description": tool.get("description"),
        "parameters": tool.get("parameters"),
        "strict": tool.get("strict"),
    }


def response_object(
    body: Json,
    *,
    response_id: str,
    model: str,
    created_at: int,
    status: str,
    output: list[Json] | None = None,
    usage: Usage | None = None,
    incomplete: Json | None = None,
    error: Json | None = None,
) -> Json:
    """The Response object, echoing the request's parameters as OpenAI does."""
    # A copy of the template, then what varies: a third of the work of a 23-key literal.
    obj = _RESPONSE.copy()
    obj["id"] = response_id
    obj["created_at"] = created_at
    obj["status"] = status
    if status == "completed":
        obj["completed_at"] = int(time.time())
    if error is not None:
        obj["error"] = error
    if incomplete is not None:
        obj["incomplete_details"] = incomplete
    obj["model"] = model
    obj["output"] = output or []
    # Fresh containers: a Response may be changed by whoever holds it.
    obj["reasoning"] = {"effort": None, "summary": None}
    obj["text"] = {"format": {"type": "text"}}
    obj["tools"] = []
    obj["metadata"] = {}
    if usage is not None:
        obj["usage"] = usage_object(usage)
    # Only the parameters the request names (a few, where a Response has some 20).
    for name in _ECHOED.intersection(body):
        value = body[name]
        if value is None:
            continue  # null is the default, which the template holds
        if name in _SET_OR_DEFAULT:
            if value:
                obj[name] = value
        elif name in _STRINGS_ONLY:
            if isinstance(value, str):
                obj[name] = value
        elif name == "tools":
            obj["tools"] = [_echoed_tool(tool) for tool in value or ()]
        elif name == "background":
            obj["background"] = bool(value)
        elif name == "conversation":
            if isinstance(value, dict):
                value = value.get("id")
            if isinstance(value, str):
                obj["conversation"] = {"id": value}
        else:
            obj[name] = value
    return obj


#: A Response's fields in OpenAI's order, with the defaults of those a request leaves out.
_RESPONSE: Json = {
    "id": None,
    "object": "response",
    "created_at": None,
    "status": None,
    "completed_at": None,
    "error": None,
    "incomplete_details": None,
    "instructions": None,
    "max_output_tokens": None,
    "model": None,
    "output": None,
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "reasoning": None,
    "store": True,
    "temperature": 1.0,
    "text": None,
    "tool_choice": "auto",
    "tools": None,
    "top_p": 1.0,
    "truncation": "disabled",
    "metadata": None,
    "background": False,
}
#: Echoed when empty or null as their default.
_SET_OR_DEFAULT = frozenset({"reasoning", "text", "metadata"})
#: Echoed only when set, and only as strings.
_STRINGS_ONLY = frozenset(
    {"user", "safety_identifier", "prompt_cache_key", "prompt_cache_retention", "service_tier"}
)
_ECHOED = frozenset(
    {
        *_SET_OR_DEFAULT,
        *_STRINGS_ONLY,
        "instructions",
        "max_output_tokens",
        "parallel_tool_calls",
        "previous_response_id",
        "store",
        "temperature",
        "tool_choice",
        "tools",
        "top_p",
        "truncation",
        "background",
        "conversation",
    }
)
