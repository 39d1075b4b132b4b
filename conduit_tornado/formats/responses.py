"""The Responses API over chat completions, the request side.

``to_chat`` turns a ``POST /v1/responses`` body (plus the history a ``previous_response_id``
rebuilt) into a chat completions body that every adapter understands, keeping the input
items it read so they can be listed and replayed. What a chat backend cannot do (hosted
tools, file inputs) is refused with a 400 naming the parameter rather than dropped; what
chat has no place for is named (``Translation.dropped_by``). The answers are
responses_output.py's (the Response object) and responses_events.py's (its stream).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from conduit_tornado.core.errors import ApiError
from conduit_tornado.routing.providers.base import Json

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
        calls = call_ids(messages)
        for index, item in enumerate(items):
            append_item(messages, item, calls, f"input[{index}]")
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
        append_item(messages, item, calls, param)
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


def call_ids(messages: list[Json]) -> set[str]:
    return {
        call["id"]
        for message in messages
        for call in message.get("tool_calls") or ()
        if isinstance(call, dict) and isinstance(call.get("id"), str)
    }


def append_item(messages: list[Json], item: Json, calls: set[str], param: str) -> None:
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
