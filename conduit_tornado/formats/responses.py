"""The Responses API over chat completions, the request side.

``to_chat`` turns a ``POST /v1/responses`` body (plus the history a ``previous_response_id``
rebuilt) into a chat completions body that every adapter understands, keeping the input
items it read so they can be listed and replayed. What a chat backend cannot do (tools
other than function tools, file inputs) is refused with a 400 naming the parameter rather
than dropped; what chat has no place for is named (``Translation.dropped_by``). Values
OpenAI's API refuses are refused whatever the backend (responses_params.py). The answers are
responses_output.py's (the Response object) and responses_events.py's (its stream).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from conduit_tornado.core.errors import ApiError
from conduit_tornado.routing.providers.base import Json

from .responses_params import invalid

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


#: What a client may name an input item: the id is part of the key a conversation stores
#: the item under, and comes back in listings, URLs (items/{item_id}) and logs. OpenAI's
#: own ids (``msg_`` and hex) and the gateway's fit.
_ITEM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _item_id(raw: Json, param: str, prefix: str) -> str:
    """The id a client gave an input item, checked; a fresh one if it gave none."""
    given = raw.get("id")
    if given is None:
        return new_id(prefix)
    if type(given) is not str or _ITEM_ID.fullmatch(given) is None:
        raise invalid(
            f"Invalid '{param}.id': expected a string of 1 to 64 letters, digits, '_' or '-'.",
            f"{param}.id",
        )
    return given


def _unique(items: list[Json], param: str) -> list[Json]:
    """The items, if no two share an id (400 naming the second): one request's items are
    stored under their ids."""
    if len(items) > 1:
        seen: set[str] = set()
        for index, item in enumerate(items):
            if item["id"] in seen:
                raise invalid(
                    f"Duplicate item found with id '{item['id']}'. Remove duplicate items from "
                    "your input and try again.",
                    f"{param}[{index}].id",
                )
            seen.add(item["id"])
    return items


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
            raise invalid("input must not be empty.", "input")
        if calls:
            _all_answered(messages, calls)
    chat: Json = {"model": model, "messages": _with_instructions(body, messages)}
    user_param = _copy_options(body, chat)
    if _CARRIED_WHOLE.issuperset(body):
        return Translation(chat, items, messages, [], user_param)  # most: nothing left out
    return Translation(chat, items, messages, _left_out(body), user_param)


def _all_answered(messages: list[Json], calls: set[str]) -> None:
    """400 for a function call with no output after it: OpenAI refuses such input, and a
    chat backend refuses an assistant tool call that no tool message answers. (An output
    before its call is refused by append_item already.)"""
    answered = {m["tool_call_id"] for m in messages if m["role"] == "tool"}
    if answered.issuperset(calls):
        return
    for message in messages:  # the first unanswered one, in conversation order
        for call in message.get("tool_calls") or ():
            if call.get("id") in calls and call["id"] not in answered:
                raise invalid(f"No tool output found for function call {call['id']}.", "input")


def _left_out(body: Json) -> list[str]:
    """The request's fields the translation to chat does not carry."""
    # A null or empty value asks for nothing, so nothing of it is left out.
    names = sorted(name for name in body.keys() - _CARRIED if not _empty(body[name]))
    if body.get("truncation", "disabled") not in ("disabled", None):
        names.append("truncation")  # chat never truncates: "disabled" is what it does
    for outer, inner in (("reasoning", "summary"), ("text", "verbosity")):
        value = body.get(outer)
        if isinstance(value, dict) and value.get(inner) is not None:
            names.append(f"{outer}.{inner}")
    return names


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict) and not value)


def input_items(value: Any, param: str = "input") -> list[Json]:
    """Input items as the API lists them (typed, each with an id); 400 on what the
    translation to chat cannot carry."""
    if isinstance(value, str):
        return [_message_item("user", [{"type": "input_text", "text": value}])]
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid(f"{param} must be a string or an array of input items.", param)
    items = []
    for index, raw in enumerate(value):
        if not isinstance(raw, dict):
            raise invalid(f"{param}[{index}] must be an object.", f"{param}[{index}]")
        items.append(_normalized(raw, f"{param}[{index}]"))
    return _unique(items, param)


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
            # Kept as sent, but under an id that passes the same check (a bad id is
            # refused here, not relayed).
            items.append(
                {**raw, "id": _item_id(raw, f"input[{index}]", "item")}
                if isinstance(raw, dict)
                else {"id": new_id("item"), "value": raw}
            )
    return _unique(items, "input")


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
            raise invalid(f"{param}.role must be one of {', '.join(ROLES)}.", f"{param}.role")
        content = raw.get("content")
        part_kind = "output_text" if role == "assistant" else "input_text"
        if isinstance(content, str):
            parts: list[Json] = [{"type": part_kind, "text": content}]
        elif isinstance(content, list):
            said = role == "assistant"  # only the model's own messages hold output text
            parts = [_part(p, f"{param}.content[{i}]", said) for i, p in enumerate(content)]
        else:
            raise invalid(
                f"{param}.content must be a string or an array of content parts.",
                f"{param}.content",
            )
        return _message_item(str(role), parts, _item_id(raw, param, "msg"))
    if kind == "function_call":
        for name in ("call_id", "name", "arguments"):
            if not isinstance(raw.get(name), str):
                raise invalid(f"{param}.{name} must be a string.", f"{param}.{name}")
        return {
            "type": "function_call",
            "id": _item_id(raw, param, "fc"),
            "call_id": raw["call_id"],
            "name": raw["name"],
            "arguments": raw["arguments"],
            "status": "completed",
        }
    if kind == "function_call_output":
        if not isinstance(raw.get("call_id"), str):
            raise invalid(f"{param}.call_id must be a string.", f"{param}.call_id")
        output = raw.get("output")
        if isinstance(output, list):
            output = "".join(
                _part(p, f"{param}.output[{i}]", True).get("text", "") for i, p in enumerate(output)
            )
        if not isinstance(output, str):
            raise invalid(f"{param}.output must be a string.", f"{param}.output")
        return {
            "type": "function_call_output",
            "id": _item_id(raw, param, "fco"),
            "call_id": raw["call_id"],
            "output": output,
            "status": "completed",
        }
    if kind == "reasoning":
        # Reasoning a previous answer carried: a chat backend cannot take it back, and
        # the answer it led to is in the history anyway.
        return {"type": "reasoning", "id": _item_id(raw, param, "rs"), "summary": []}
    raise invalid(
        f"Input items of type {kind!r} are not supported by this gateway's translation to "
        "chat completions.",
        f"{param}.type",
        "unsupported_value",
    )


def _part(raw: Any, param: str, said: bool) -> Json:
    """A content part as the API lists it; ``said``: whether it may be output text (an
    assistant message's)."""
    if not isinstance(raw, dict):
        raise invalid(f"{param} must be an object.", param)
    kind = raw.get("type")
    if kind in ("output_text", "refusal") and not said:
        raise invalid(
            f"Invalid value: {kind!r}. Content parts of type {kind!r} belong to assistant "
            "messages; use 'input_text' in user, system and developer messages.",
            f"{param}.type",
        )
    if kind in ("input_text", "output_text", "text", "refusal"):
        text = raw.get("refusal") if kind == "refusal" else raw.get("text")
        if not isinstance(text, str):
            raise invalid(f"{param}.text must be a string.", f"{param}.text")
        return {
            "type": "output_text" if kind in ("output_text", "refusal") else "input_text",
            "text": text,
            **({"annotations": []} if kind in ("output_text", "refusal") else {}),
        }
    if kind == "input_image":
        url = raw.get("image_url")
        if not isinstance(url, str) or not url:
            raise invalid(
                f"{param}.image_url must be a URL or a data URL; file_id images need the "
                "Files API, which chat backends do not share.",
                f"{param}.image_url",
            )
        detail = raw.get("detail", "auto")
        return {"type": "input_image", "image_url": url, "detail": detail}
    raise invalid(
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
            raise invalid(
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
                raise invalid(f"instructions[{index}] must be an object.", "instructions")
            item = _normalized(raw, f"instructions[{index}]")
            if item["type"] != "message":
                raise invalid("instructions may hold messages only.", "instructions")
            prefix.append(_chat_message(item["role"], item["content"]))
        return [*prefix, *messages]
    raise invalid("instructions must be a string or an array of messages.", "instructions")


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


def _copy_options(body: Json, chat: Json) -> str:
    """Copy the options chat carries; return which field gave chat its ``user``."""
    most = body.get("max_output_tokens")
    if most is not None:
        if not isinstance(most, int) or isinstance(most, bool) or most < 16:
            raise invalid(
                "max_output_tokens must be an integer of at least 16.", "max_output_tokens"
            )
        chat["max_completion_tokens"] = most
    if _OPTIONS.isdisjoint(body):
        return "user"  # most requests: nothing more to read
    for name in _PASSED:
        if body.get(name) is not None:
            chat[name] = body[name]
    if chat.get("top_logprobs") is not None:
        chat["logprobs"] = True
    user_param = "user"
    if body.get("safety_identifier") is not None and "user" not in chat:
        chat["user"] = body["safety_identifier"]
        user_param = "safety_identifier"
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
    return user_param


#: Tools OpenAI runs itself, during the response. The others a client runs (custom,
#: computer use, local shell, apply_patch ...) have call and output items of their own
#: type, which chat has no place for.
_HOSTED_TOOLS = frozenset(
    {
        "web_search",
        "web_search_2025_08_26",
        "web_search_preview",
        "web_search_preview_2025_03_11",
        "file_search",
        "code_interpreter",
        "image_generation",
        "mcp",
    }
)


def _tools(tools: Any) -> list[Json]:
    if not isinstance(tools, list):
        raise invalid("tools must be an array.", "tools")
    out = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise invalid(f"tools[{index}] must be an object.", f"tools[{index}]")
        kind = tool.get("type")
        if kind != "function":
            raise invalid(
                f"Tools of type {kind!r} run inside OpenAI's platform; this model's backend "
                "can only call function tools."
                if kind in _HOSTED_TOOLS
                else f"Tools of type {kind!r} are not translated to chat completions, which "
                "this model's backend speaks; use function tools.",
                f"tools[{index}].type",
                "unsupported_value",
            )
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise invalid(f"tools[{index}].name must be a string.", f"tools[{index}].name")
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
            raise invalid("tool_choice.name must be a string.", "tool_choice.name")
        return {"type": "function", "function": {"name": choice["name"]}}
    raise invalid(
        "tool_choice must be 'auto', 'none', 'required' or a function tool choice.",
        "tool_choice",
        "unsupported_value",
    )


def _format(fmt: Any) -> Json | None:
    if not isinstance(fmt, dict):
        raise invalid("text.format must be an object.", "text.format")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        if not isinstance(fmt.get("name"), str) or not isinstance(fmt.get("schema"), dict):
            raise invalid("text.format needs a name and a schema object.", "text.format")
        schema: Json = {"name": fmt["name"], "schema": fmt["schema"]}
        for name in ("strict", "description"):
            if fmt.get(name) is not None:
                schema[name] = fmt[name]
        return {"type": "json_schema", "json_schema": schema}
    raise invalid("text.format.type must be text, json_object or json_schema.", "text.format.type")
