"""The Responses API over chat completions: requests in, answers and streams out.

``to_chat`` turns a ``POST /v1/responses`` body (plus the history a ``previous_response_id``
rebuilt) into a chat completions body that every adapter understands, keeping the input
items it read so they can be listed and replayed. ``output_of`` and ``EventStream`` turn
the chat answer, whole or as chunks, into the Response object and the event sequence the
official SDKs expect. What a chat backend cannot do (hosted tools, file inputs) is refused
with a 400 naming the parameter rather than dropped.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from conduit_tornado.core.errors import ApiError
from conduit_tornado.routing.providers.base import Json, Usage

from .sse import named_events

ROLES = ("user", "assistant", "system", "developer")
_ID_BYTES = 24
_POOL_IDS = 128  # ids drawn from one getrandom(2) call


_ids: list[str] = []


def _more_ids() -> None:
    # One system call for many ids: a Response makes several (its own, each input and
    # output item's), and one call each showed in profiles. The bytes are the same
    # os.urandom that secrets uses. Two threads may both refill: each id is still
    # handed out once, since list.pop is atomic.
    block = os.urandom(_ID_BYTES * _POOL_IDS).hex()
    width = 2 * _ID_BYTES
    _ids.extend([block[at : at + width] for at in range(0, len(block), width)])


# A forked child must not hand out its parent's ids.
os.register_at_fork(after_in_child=_ids.clear)


def new_id(prefix: str) -> str:
    """A fresh id such as ``resp_`` and 48 hex digits, from the OS's random bytes."""
    while True:
        try:
            return prefix + "_" + _ids.pop()
        except IndexError:
            _more_ids()


def _invalid(message: str, param: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


# -- request -------------------------------------------------------------------------------


@dataclass
class Translation:
    """A Responses request as chat: the body to send, and what to keep of it."""

    chat: Json
    #: This request's input items as the API lists them (each with an id).
    items: list[Json]
    #: The conversation as chat messages, history first, without the instructions (a
    #: follow-up does not inherit them).
    messages: list[Json]
    #: The request's fields that chat has no place for, left out.
    dropped: list[str] = field(default_factory=list)
    #: Which of the request's fields gave chat its ``user``.
    user_param: str = "user"

    def dropped_by(self, chat_dropped: list[str]) -> list[str]:
        """What a backend answering left out, as the request named it: the fields the
        translation left out, then those the provider's adapter left out of the chat
        body (its ``dropped``) under their Responses names."""
        if not chat_dropped:
            return self.dropped
        names = list(self.dropped)
        for name in chat_dropped:
            name = self.user_param if name == "user" else _RESPONSES_NAMES.get(name, name)
            if name not in names:
                names.append(name)
        return names


def to_chat(body: Json, history: list[Json] | None = None) -> Translation:
    """Translate a Responses request; raise ApiError(400) on what cannot be translated."""
    model = body.get("model")
    source = body.get("input")
    if type(source) is str and not history:
        # The usual first turn: one user message (what the loop below makes of it).
        items = [_message_item("user", [{"type": "input_text", "text": source}])]
        messages: list[Json] = [{"role": "user", "content": source}]
    else:
        items = input_items(source)
        messages = list(history or [])
        calls = _call_ids(messages)
        for index, item in enumerate(items):
            _append(messages, item, calls, f"input[{index}]")
        if not messages:
            raise _invalid("input must not be empty.", "input")
    chat: Json = {"model": model, "messages": _with_instructions(body, messages)}
    _copy_options(body, chat)
    if _CARRIED_WHOLE.issuperset(body):
        return Translation(chat, items, messages)  # most requests: nothing left out
    return Translation(
        chat,
        items,
        messages,
        _left_out(body),
        "user" if body.get("user") is not None else "safety_identifier",
    )


def _left_out(body: Json) -> list[str]:
    """The request's fields the translation to chat does not carry."""
    names = sorted(body.keys() - _CARRIED)
    if body.get("truncation", "disabled") not in ("disabled", None):
        names.append("truncation")  # chat never truncates: "disabled" is what it does
    for outer, inner in (("reasoning", "summary"), ("text", "verbosity")):
        value = body.get(outer)
        if isinstance(value, dict) and value.get(inner) is not None:
            names.append(f"{outer}.{inner}")
    return names


def input_items(value: Any, param: str = "input") -> list[Json]:
    """Input items as the API lists them (typed, each with an id); 400 on what the
    translation to chat cannot carry."""
    if isinstance(value, str):
        return [_message_item("user", [{"type": "input_text", "text": value}])]
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid(f"{param} must be a string or an array of input items.", param)
    items = []
    for index, raw in enumerate(value):
        if not isinstance(raw, dict):
            raise _invalid(f"{param}[{index}] must be an object.", f"{param}[{index}]")
        items.append(_normalized(raw, f"{param}[{index}]"))
    return items


def relayed_items(value: Any) -> list[Json]:
    """Input items for a provider that takes them as they are (the native relay): each
    with an id for listing, those this translation cannot read kept as sent."""
    if not isinstance(value, list):
        return input_items(value)
    items = []
    for index, raw in enumerate(value):
        try:
            items += input_items([raw], f"input[{index}]")
        except ApiError:
            items.append(
                {**raw, "id": raw.get("id") or new_id("item")}
                if isinstance(raw, dict)
                else {"id": new_id("item"), "value": raw}
            )
    return items


def messages_of(items: list[Json], param: str = "conversation") -> list[Json]:
    """Stored items (a conversation's), oldest first, as chat messages."""
    messages: list[Json] = []
    calls: set[str] = set()
    for item in items:
        _append(messages, item, calls, param)
    return messages


def _message_item(role: str, content: list[Json], item_id: str | None = None) -> Json:
    return {
        "type": "message",
        "id": item_id or new_id("msg"),
        "role": role,
        "status": "completed",
        "content": content,
    }


def _normalized(raw: Json, param: str) -> Json:
    """An input item in the shape input_items lists: typed, with an id."""
    kind = raw.get("type", "message" if "role" in raw else None)
    if kind == "message":
        role = raw.get("role")
        if role not in ROLES:
            raise _invalid(f"{param}.role must be one of {', '.join(ROLES)}.", f"{param}.role")
        content = raw.get("content")
        part_kind = "output_text" if role == "assistant" else "input_text"
        if isinstance(content, str):
            parts: list[Json] = [{"type": part_kind, "text": content}]
        elif isinstance(content, list):
            parts = [_part(p, f"{param}.content[{i}]") for i, p in enumerate(content)]
        else:
            raise _invalid(
                f"{param}.content must be a string or an array of content parts.",
                f"{param}.content",
            )
        item_id = raw.get("id") if isinstance(raw.get("id"), str) else None
        return _message_item(str(role), parts, item_id)
    if kind == "function_call":
        for name in ("call_id", "name", "arguments"):
            if not isinstance(raw.get(name), str):
                raise _invalid(f"{param}.{name} must be a string.", f"{param}.{name}")
        return {
            "type": "function_call",
            "id": raw.get("id") if isinstance(raw.get("id"), str) else new_id("fc"),
            "call_id": raw["call_id"],
            "name": raw["name"],
            "arguments": raw["arguments"],
            "status": "completed",
        }
    if kind == "function_call_output":
        if not isinstance(raw.get("call_id"), str):
            raise _invalid(f"{param}.call_id must be a string.", f"{param}.call_id")
        output = raw.get("output")
        if isinstance(output, list):
            output = "".join(
                _part(p, f"{param}.output[{i}]").get("text", "") for i, p in enumerate(output)
            )
        if not isinstance(output, str):
            raise _invalid(f"{param}.output must be a string.", f"{param}.output")
        return {
            "type": "function_call_output",
            "id": raw.get("id") if isinstance(raw.get("id"), str) else new_id("fco"),
            "call_id": raw["call_id"],
            "output": output,
            "status": "completed",
        }
    if kind == "reasoning":
        # Reasoning a previous answer carried: a chat backend cannot take it back, and
        # the answer it led to is in the history anyway.
        return {"type": "reasoning", "id": raw.get("id") or new_id("rs"), "summary": []}
    raise _invalid(
        f"Input items of type {kind!r} are not supported by this gateway's translation to "
        "chat completions.",
        f"{param}.type",
        "unsupported_value",
    )


def _part(raw: Any, param: str) -> Json:
    if not isinstance(raw, dict):
        raise _invalid(f"{param} must be an object.", param)
    kind = raw.get("type")
    if kind in ("input_text", "output_text", "text", "refusal"):
        text = raw.get("refusal") if kind == "refusal" else raw.get("text")
        if not isinstance(text, str):
            raise _invalid(f"{param}.text must be a string.", f"{param}.text")
        return {
            "type": "output_text" if kind in ("output_text", "refusal") else "input_text",
            "text": text,
            **({"annotations": []} if kind in ("output_text", "refusal") else {}),
        }
    if kind == "input_image":
        url = raw.get("image_url")
        if not isinstance(url, str) or not url:
            raise _invalid(
                f"{param}.image_url must be a URL or a data URL; file_id images need the "
                "Files API, which chat backends do not share.",
                f"{param}.image_url",
            )
        detail = raw.get("detail", "auto")
        return {"type": "input_image", "image_url": url, "detail": detail}
    raise _invalid(
        f"Content parts of type {kind!r} are not supported by this gateway's translation to "
        "chat completions.",
        f"{param}.type",
        "unsupported_value",
    )


def _call_ids(messages: list[Json]) -> set[str]:
    return {
        call["id"]
        for message in messages
        for call in message.get("tool_calls") or ()
        if isinstance(call, dict) and isinstance(call.get("id"), str)
    }


def _append(messages: list[Json], item: Json, calls: set[str], param: str) -> None:
    """Add one input item to a chat conversation."""
    kind = item["type"]
    if kind == "message":
        messages.append(_chat_message(item["role"], item["content"]))
    elif kind == "function_call":
        call = {
            "id": item["call_id"],
            "type": "function",
            "function": {"name": item["name"], "arguments": item["arguments"]},
        }
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant" and "tool_calls" in last:
            last["tool_calls"].append(call)
        elif last is not None and last["role"] == "assistant":
            last["tool_calls"] = [call]
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        calls.add(item["call_id"])
    elif kind == "function_call_output":
        if item["call_id"] not in calls:
            raise _invalid(
                f"No tool call found for function call output with call_id {item['call_id']}.",
                param,
            )
        messages.append(
            {"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]}
        )


def _chat_message(role: str, parts: list[Json]) -> Json:
    texts = [p["text"] for p in parts if p["type"] in ("input_text", "output_text")]
    if role == "assistant" or all(p["type"] != "input_image" for p in parts):
        return {"role": role, "content": "".join(texts)}
    content: list[Json] = []
    for part in parts:
        if part["type"] == "input_image":
            content.append(
                {
                    "type": "image_url",
                    "image_url": {"url": part["image_url"], "detail": part.get("detail", "auto")},
                }
            )
        else:
            content.append({"type": "text", "text": part["text"]})
    return {"role": role, "content": content}


def _with_instructions(body: Json, messages: list[Json]) -> list[Json]:
    instructions = body.get("instructions")
    if instructions is None:
        return messages
    if isinstance(instructions, str):
        return [{"role": "system", "content": instructions}, *messages]
    if isinstance(instructions, list):
        prefix: list[Json] = []
        for index, raw in enumerate(instructions):
            if not isinstance(raw, dict):
                raise _invalid(f"instructions[{index}] must be an object.", "instructions")
            item = _normalized(raw, f"instructions[{index}]")
            if item["type"] != "message":
                raise _invalid("instructions may hold messages only.", "instructions")
            prefix.append(_chat_message(item["role"], item["content"]))
        return [*prefix, *messages]
    raise _invalid("instructions must be a string or an array of messages.", "instructions")


_PASSED = ("temperature", "top_p", "parallel_tool_calls", "user", "top_logprobs")
#: Options other than max_output_tokens that _copy_options reads.
_OPTIONS = frozenset({*_PASSED, "safety_identifier", "reasoning", "tools", "tool_choice", "text"})
#: Request fields translated to chat, or that the gateway acts on itself; others are left
#: out and named in x-conduit-dropped-params. (Of reasoning and text, only effort and
#: format are carried; truncation only as "disabled", chat's own behaviour.)
_CARRIED = frozenset(
    {
        *_OPTIONS,
        "model",
        "input",
        "instructions",
        "max_output_tokens",
        "stream",
        "store",
        "background",
        "conversation",
        "previous_response_id",
        "metadata",
        "truncation",
    }
)
#: Of those, the ones carried whatever their value.
_CARRIED_WHOLE = _CARRIED - {"reasoning", "text", "truncation"}
#: Chat fields an adapter may leave out, under the Responses names they came from.
_RESPONSES_NAMES = {
    "max_completion_tokens": "max_output_tokens",
    "response_format": "text.format",
    "reasoning_effort": "reasoning.effort",
    "logprobs": "top_logprobs",
}


def _copy_options(body: Json, chat: Json) -> None:
    most = body.get("max_output_tokens")
    if most is not None:
        if not isinstance(most, int) or isinstance(most, bool) or most < 16:
            raise _invalid(
                "max_output_tokens must be an integer of at least 16.", "max_output_tokens"
            )
        chat["max_completion_tokens"] = most
    if _OPTIONS.isdisjoint(body):
        return  # most requests: nothing more to read
    for name in _PASSED:
        if body.get(name) is not None:
            chat[name] = body[name]
    if chat.get("top_logprobs") is not None:
        chat["logprobs"] = True
    if body.get("safety_identifier") is not None and "user" not in chat:
        chat["user"] = body["safety_identifier"]
    effort = (
        (body.get("reasoning") or {}).get("effort")
        if isinstance(body.get("reasoning"), dict)
        else None
    )
    if effort is not None:
        chat["reasoning_effort"] = effort
    tools = body.get("tools")
    if tools:
        chat["tools"] = _tools(tools)
    choice = body.get("tool_choice")
    if choice is not None:
        chat["tool_choice"] = _tool_choice(choice)
    fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if fmt is not None:
        response_format = _format(fmt)
        if response_format is not None:
            chat["response_format"] = response_format


def _tools(tools: Any) -> list[Json]:
    if not isinstance(tools, list):
        raise _invalid("tools must be an array.", "tools")
    out = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _invalid(f"tools[{index}] must be an object.", f"tools[{index}]")
        if tool.get("type") != "function":
            raise _invalid(
                f"Tools of type {tool.get('type')!r} run inside OpenAI's platform; this "
                "model's backend can only call function tools.",
                f"tools[{index}].type",
                "unsupported_value",
            )
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise _invalid(f"tools[{index}].name must be a string.", f"tools[{index}].name")
        function: Json = {"name": tool["name"]}
        for name in ("description", "parameters", "strict"):
            if tool.get(name) is not None:
                function[name] = tool[name]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        if not isinstance(choice.get("name"), str):
            raise _invalid("tool_choice.name must be a string.", "tool_choice.name")
        return {"type": "function", "function": {"name": choice["name"]}}
    raise _invalid(
        "tool_choice must be 'auto', 'none', 'required' or a function tool choice.",
        "tool_choice",
        "unsupported_value",
    )


def _format(fmt: Any) -> Json | None:
    if not isinstance(fmt, dict):
        raise _invalid("text.format must be an object.", "text.format")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        if not isinstance(fmt.get("name"), str) or not isinstance(fmt.get("schema"), dict):
            raise _invalid("text.format needs a name and a schema object.", "text.format")
        schema: Json = {"name": fmt["name"], "schema": fmt["schema"]}
        for name in ("strict", "description"):
            if fmt.get(name) is not None:
                schema[name] = fmt[name]
        return {"type": "json_schema", "json_schema": schema}
    raise _invalid("text.format.type must be text, json_object or json_schema.", "text.format.type")


# -- answers -------------------------------------------------------------------------------


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
    calls = _call_ids(messages)
    for item in items:
        _append(messages, item, calls, "previous_response_id")
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
            _append(messages, item, calls, "output")
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
_STRINGS_ONLY = frozenset({"user", "safety_identifier", "prompt_cache_key", "service_tier"})
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


# -- streams -------------------------------------------------------------------------------


def _refusal_part(text: str) -> Json:
    return {"type": "refusal", "refusal": text}


@dataclass
class _Open:
    """An output item being streamed."""

    index: int
    item: Json
    text: list[str] = field(default_factory=list)
    refusal: bool = False  # a message whose one part is a refusal, not output_text
    #: A text message's delta frame from its item_id to its delta, encoded once.
    delta_middle: bytes = b""


# A text delta's named SSE frame around its sequence number, ids and text: the bytes
# named_events makes of the event _text builds (tests/test_responses_frames.py holds them
# equal), without a dict and an encoding of every field per streamed token.
_DELTA_HEAD = (
    b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
    b'"sequence_number":'
)
_DELTA_TAIL = b',"logprobs":[]}\n\n'


def _more_text(chunk: Json) -> str | None:
    """The text of a chunk that holds only text for the first choice, which most chunks
    of a streamed answer are (None for any other chunk)."""
    choices = chunk.get("choices")
    if type(choices) is not list or len(choices) != 1:
        return None
    choice = choices[0]
    if type(choice) is not dict or choice.get("index", 0) != 0 or choice.get("finish_reason"):
        return None
    delta = choice.get("delta")
    if type(delta) is not dict:
        return None
    text = delta.get("content")
    if type(text) is not str or not text:
        return None
    # A delta of text alone (the usual one) needs no look for a refusal or tool calls.
    if len(delta) > 1 and (delta.get("refusal") or delta.get("tool_calls")):
        return None
    return text


def _delta_middle(quoted_id: bytes, index: int) -> bytes:
    return b',"item_id":%s,"output_index":%d,"content_index":0,"delta":' % (quoted_id, index)


# The output_item.added and content_part.added frames of a text message (sequence
# numbers, output index and quoted item id filled in), as named_events encodes _text's
# events: held equal by tests/test_responses_frames.py.
_OPENED = (
    b"event: response.output_item.added\n"
    b'data: {"type":"response.output_item.added","sequence_number":%d,"output_index":%d,'
    b'"item":{"id":%s,"type":"message","status":"in_progress","role":"assistant",'
    b'"content":[]}}\n\n'
    b"event: response.content_part.added\n"
    b'data: {"type":"response.content_part.added","sequence_number":%d,"item_id":%s,'
    b'"output_index":%d,"content_index":0,"part":{"type":"output_text","text":"",'
    b'"annotations":[],"logprobs":[]}}\n\n'
)
# And its three closing frames (_close_message's events), the text filled in thrice.
_CLOSED = (
    b"event: response.output_text.done\n"
    b'data: {"type":"response.output_text.done","sequence_number":%d,"item_id":%s,'
    b'"output_index":%d,"content_index":0,"text":%s,"logprobs":[]}\n\n'
    b"event: response.content_part.done\n"
    b'data: {"type":"response.content_part.done","sequence_number":%d,"item_id":%s,'
    b'"output_index":%d,"content_index":0,"part":{"type":"output_text","text":%s,'
    b'"annotations":[],"logprobs":[]}}\n\n'
    b"event: response.output_item.done\n"
    b'data: {"type":"response.output_item.done","sequence_number":%d,"output_index":%d,'
    b'"item":{"id":%s,"type":"message","status":"completed","role":"assistant",'
    b'"content":[{"type":"output_text","text":%s,"annotations":[],"logprobs":[]}]}}\n\n'
)


class EventStream:
    """Chat chunks in, Responses stream events out, numbered in order.

    The item a chunk starts is announced before its first delta, and closed (its
    ``...done`` events) when the next item starts or the stream ends; the last event is
    ``response.completed`` (or ``response.incomplete``) carrying the whole Response with
    its usage, which chat streams report only at their end."""

    def __init__(self, body: Json, response_id: str, model: str, created_at: int) -> None:
        self.body = body
        self.response_id = response_id
        self.model = model
        self.created_at = created_at
        self.sequence = 0
        self.output: list[Json] = []
        self.finish_reason: Any = None
        self._message: _Open | None = None
        self._calls: dict[int, _Open] = {}
        #: The whole Response, once the stream has ended.
        self.final: Json | None = None
        #: The whole Response as JSON, when finish_frames encoded it.
        self.final_encoded: bytes | None = None
        #: Characters of output text streamed (for an estimate without usage).
        self.chars = 0
        #: What batch_frames noted: the model the provider says answered, and usage.
        self.reported: str | None = None
        self.usage: Usage | None = None

    def _event(self, kind: str, **fields: Any) -> Json:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def response(self, status: str, **kwargs: Any) -> Json:
        return response_object(
            self.body,
            response_id=self.response_id,
            model=self.model,
            created_at=self.created_at,
            status=status,
            **kwargs,
        )

    def start(self) -> list[Json]:
        snapshot = self.response("in_progress")
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
        ]

    # The same events as named SSE frames (what start, feed and finish return, through
    # sse.named_events), encoded with less work: the Response in the first two and the
    # last event is encoded once, and a text delta from a template.

    def start_frames(self) -> bytes:
        snapshot = orjson.dumps(self.response("in_progress"))
        return self._response_frame("response.created", snapshot) + self._response_frame(
            "response.in_progress", snapshot
        )

    def batch_frames(self, batch: list[Json]) -> bytes:
        """The frames of feed's events for each chunk of a batch (what one read from
        upstream held), and what the route notes of them: the model the provider says
        answered and the usage, in ``reported`` and ``usage``. Most chunks are more text
        for the open message, one a read: that case, and the text that opens a message,
        are templates."""
        frames = []
        for chunk in batch:
            if self.reported is None:
                reported = chunk.get("model")
                if isinstance(reported, str) and reported:
                    self.reported = reported
            usage = chunk.get("usage")
            if usage:
                self.usage = Usage.from_openai(usage)
            current = self._message
            if current is None:
                if not self._calls:
                    text = _more_text(chunk)
                    if text is not None:
                        frames.append(self._open_frames(text))
                        continue
            elif current.delta_middle:
                # _more_text, inline: this runs for every streamed token.
                choices = chunk.get("choices")
                if type(choices) is list and len(choices) == 1:
                    choice = choices[0]
                    if (
                        type(choice) is dict
                        and not choice.get("finish_reason")
                        and choice.get("index", 0) == 0
                    ):
                        delta = choice.get("delta")
                        if type(delta) is dict:
                            text = delta.get("content")
                            if (
                                type(text) is str
                                and text
                                and (
                                    len(delta) == 1
                                    or not (delta.get("refusal") or delta.get("tool_calls"))
                                )
                            ):
                                frames.append(self._delta_frame(current, text))
                                continue
            events = self.feed(chunk)
            if events:
                frames.append(named_events(events))
        return frames[0] if len(frames) == 1 else b"".join(frames)

    def _delta_frame(self, current: _Open, text: str) -> bytes:
        # Only more text for the open message: what _text does for it.
        current.text.append(text)
        self.chars += len(text)
        sequence = self.sequence
        self.sequence = sequence + 1
        return b"%s%d%s%s%s" % (
            _DELTA_HEAD,
            sequence,
            current.delta_middle,
            orjson.dumps(text),
            _DELTA_TAIL,
        )

    def _open_frames(self, text: str) -> bytes:
        """What _text's events for the text that opens a message (nothing being open)
        encode to: the item and its part announced, then the first delta."""
        index = len(self.output)
        item_id = new_id("msg")
        item = {
            "id": item_id,
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        quoted = orjson.dumps(item_id)
        current = _Open(index, item, delta_middle=_delta_middle(quoted, index))
        self._message = current
        sequence = self.sequence
        self.sequence = sequence + 2
        return _OPENED % (sequence, index, quoted, sequence + 1, quoted, index) + self._delta_frame(
            current, text
        )

    def _close_frames(self, current: _Open) -> bytes:
        """What _close_message's events for an open text message encode to."""
        self._message = None
        text = "".join(current.text)
        part = output_text_part(text)
        item = {**current.item, "status": "completed", "content": [part]}
        self.output.append(item)
        sequence = self.sequence
        self.sequence = sequence + 3
        quoted, index = orjson.dumps(current.item["id"]), current.index
        encoded = orjson.dumps(text)
        return _CLOSED % (
            sequence,
            quoted,
            index,
            encoded,
            sequence + 1,
            quoted,
            index,
            encoded,
            sequence + 2,
            index,
            quoted,
            encoded,
        )

    def finish_frames(self, usage: Usage) -> bytes:
        """finish's events as frames; ``final_encoded`` is then the Response encoded."""
        current = self._message
        if current is not None and not current.refusal:
            closed = self._close_frames(current)
        else:
            closed = named_events(self._close_message())
        if self._calls:
            closed += named_events(self._close_calls())
        final, kind = self._final(usage)
        encoded = orjson.dumps(final)
        self.final_encoded = encoded
        return closed + self._response_frame(kind, encoded)

    def _response_frame(self, kind: str, response: bytes) -> bytes:
        # orjson.dumps of {"type", "sequence_number", "response"} with the Response
        # already encoded.
        sequence = self.sequence
        self.sequence = sequence + 1
        name = kind.encode()
        return b'event: %s\ndata: {"type":"%s","sequence_number":%d,"response":%s}\n\n' % (
            name,
            name,
            sequence,
            response,
        )

    def feed(self, chunk: Json) -> list[Json]:
        events: list[Json] = []
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # the Responses API has one answer per request
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                events += self._text(text)
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                events += self._text(refusal, refusal=True)
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    events += self._call(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def _text(self, text: str, refusal: bool = False) -> list[Json]:
        current = self._message
        if current is not None and current.refusal == refusal and not refusal:
            # Every chunk after the first: one delta event, built in one go (this runs per
            # streamed token; the fields and their order are _event's).
            current.text.append(text)
            if isinstance(text, str):
                self.chars += len(text)
            sequence = self.sequence
            self.sequence = sequence + 1
            return [
                {
                    "type": "response.output_text.delta",
                    "sequence_number": sequence,
                    "item_id": current.item["id"],
                    "output_index": current.index,
                    "content_index": 0,
                    "delta": text,
                    "logprobs": [],
                }
            ]
        events: list[Json] = []
        if self._message is not None and self._message.refusal != refusal:
            events += self._close_message()  # text after a refusal (or before): a new item
        if self._message is None:
            events += self._close_calls()
            item_id = new_id("msg")
            item = {
                "id": item_id,
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
            index = len(self.output) + len(self._calls)
            middle = b"" if refusal else _delta_middle(orjson.dumps(item_id), index)
            self._message = _Open(index, item, refusal=refusal, delta_middle=middle)
            events.append(
                self._event(
                    "response.output_item.added", output_index=self._message.index, item=item
                )
            )
            events.append(
                self._event(
                    "response.content_part.added",
                    item_id=item["id"],
                    output_index=self._message.index,
                    content_index=0,
                    part=_refusal_part("") if refusal else output_text_part(""),
                )
            )
        self._message.text.append(text)
        if not refusal and isinstance(text, str):
            self.chars += len(text)
        ids = {"item_id": self._message.item["id"], "output_index": self._message.index}
        if refusal:
            events.append(self._event("response.refusal.delta", **ids, content_index=0, delta=text))
        else:
            events.append(
                self._event(
                    "response.output_text.delta", **ids, content_index=0, delta=text, logprobs=[]
                )
            )
        return events

    def _call(self, call: Json) -> list[Json]:
        events: list[Json] = []
        index = call.get("index", 0)
        function = call.get("function") or {}
        current = self._calls.get(index)
        if current is None:
            events += self._close_message()
            item = {
                "id": new_id("fc"),
                "type": "function_call",
                "status": "in_progress",
                "call_id": call.get("id") or new_id("call"),
                "name": function.get("name") or "",
                "arguments": "",
            }
            current = _Open(len(self.output) + len(self._calls), item)
            self._calls[index] = current
            events.append(
                self._event(
                    "response.output_item.added", output_index=current.index, item=dict(item)
                )
            )
        elif function.get("name") and not current.item["name"]:
            current.item["name"] = function["name"]
        arguments = function.get("arguments")
        if arguments:
            current.text.append(arguments)
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=current.item["id"],
                    output_index=current.index,
                    delta=arguments,
                )
            )
        return events

    def _close_message(self) -> list[Json]:
        current, self._message = self._message, None
        if current is None:
            return []
        text = "".join(current.text)
        part = _refusal_part(text) if current.refusal else output_text_part(text)
        item = {**current.item, "status": "completed", "content": [part]}
        self.output.append(item)
        ids = {"item_id": item["id"], "output_index": current.index}
        done = (
            self._event("response.refusal.done", **ids, content_index=0, refusal=text)
            if current.refusal
            else self._event(
                "response.output_text.done", **ids, content_index=0, text=text, logprobs=[]
            )
        )
        return [
            done,
            self._event("response.content_part.done", **ids, content_index=0, part=part),
            self._event("response.output_item.done", output_index=current.index, item=item),
        ]

    def _close_calls(self) -> list[Json]:
        events: list[Json] = []
        for current in sorted(self._calls.values(), key=lambda c: c.index):
            arguments = "".join(current.text) or "{}"
            item = {**current.item, "status": "completed", "arguments": arguments}
            self.output.append(item)
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=current.index,
                    name=item["name"],
                    arguments=arguments,
                )
            )
            events.append(
                self._event("response.output_item.done", output_index=current.index, item=item)
            )
        self._calls.clear()
        return events

    def finish(self, usage: Usage) -> list[Json]:
        """Close what is open and end with the whole Response."""
        events = self._close_message() + self._close_calls()
        final, kind = self._final(usage)
        events.append(self._event(kind, response=final))
        return events

    def _final(self, usage: Usage) -> tuple[Json, str]:
        status, incomplete = status_of(self.finish_reason)
        final = self.response(status, output=self.output, usage=usage, incomplete=incomplete)
        self.final = final
        return final, "response.completed" if status == "completed" else "response.incomplete"

    def fail(self, code: str, message: str) -> Json:
        """The event that ends a stream whose provider failed after it started."""
        self.final = self.response(
            "failed", output=self.output, error={"code": code, "message": message}
        )
        return self._event("response.failed", response=self.final)
