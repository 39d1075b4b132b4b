"""What the mock provider answers when a request asks for a shape: JSON mode, a JSON
schema (structured outputs), or a call to one of its function tools.

The answer is a minimal instance of the schema: required properties only, the first
enum value or const, the first branch of anyOf/oneOf that is not null, the fewest array
items allowed, numbers at the lower bound the schema allows (0 when it allows 0), strings
of the minimum length in the named format. Enough for an SDK's ``parse`` to succeed and
for code that reads the fields to run; not an attempt at realistic data. Not honoured:
``pattern``, ``uniqueItems`` with more than one required item, ``not``, ``if``/``then``.

Tools (function tools only): a named ``tool_choice`` calls that function; ``required``
calls the first tool; ``auto`` (the default) calls the first tool unless the last message
is a tool's result, so an agent loop gets one call, then a text answer; ``none`` answers
in text. One call per answer (``parallel_tool_calls`` allows more, never requires them).

The schema comes from the client, so the work is bounded: at most MAX_DEPTH levels of
nesting ($ref included: a schema whose self-reference is required is refused, not
followed forever) and
MAX_VALUES values and MAX_CHARS characters in all; past any of them the request is refused
(400) naming the field.
"""

from __future__ import annotations

import math
import re
import secrets
from typing import Any

import orjson

from conduit_tornado.routing.upstream import ProviderError

from .base import Json, function_tools

MAX_DEPTH = 32
MAX_VALUES = 10_000
MAX_CHARS = 100_000  # in all the strings built (minLength can ask for any length)

#: Chat fields the mock acts on; any other a client sets is named in
#: x-conduit-dropped-params (temperature, seed, stop, max_tokens... change nothing here).
HONOURED = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",  # the gateway reports usage as asked
        "n",  # the gateway asks n times (supports_n is False)
        "response_format",
        "tools",
        "tool_choice",
        "parallel_tool_calls",  # one call per answer complies with true and false
    }
)

_FORMATS = {
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
    "time": "00:00:00Z",
    "duration": "P1D",
    "email": "mock@example.com",
    "idn-email": "mock@example.com",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uri": "https://example.com/",
    "iri": "https://example.com/",
    "uri-reference": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


#: What a parameter's name looks like. Other keys a body holds are no parameter of any
#: API, and would not be safe in a header (control characters, any length, any number).
_PARAMETER = re.compile(r"[A-Za-z0-9_]{1,64}")
MAX_NAMED = 32


def dropped(body: Json) -> list[str]:
    names = (k for k, v in body.items() if k not in HONOURED and v is not None)
    return sorted(k for k in names if _PARAMETER.fullmatch(k))[:MAX_NAMED]


class _Builder:
    def __init__(self, root: Json, param: str) -> None:
        self.root = root
        self.param = param
        self.values = 0
        self.chars = 0

    def refuse(self, why: str) -> ProviderError:
        return ProviderError(
            "client",
            f"The mock provider cannot build an instance of this schema: {why}.",
            param=self.param,
        )

    def resolve(self, ref: str) -> Any:
        if not ref.startswith("#"):
            raise self.refuse(f"only local $ref are followed, not {ref!r}")
        node: Any = self.root
        for part in ref[1:].lstrip("/").split("/") if ref not in ("#", "#/") else []:
            key = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                raise self.refuse(f"$ref {ref!r} points nowhere")
        return node

    def build(self, schema: Any, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise self.refuse(f"it nests deeper than {MAX_DEPTH} levels")
        self.values += 1
        if self.values > MAX_VALUES:
            raise self.refuse(f"it needs more than {MAX_VALUES} values")
        if schema is True or schema is None:
            return "mock"
        if not isinstance(schema, dict):
            raise self.refuse("a schema must be an object")
        if "$ref" in schema:
            return self.build(self.resolve(str(schema["$ref"])), depth + 1)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return schema["enum"][0]
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                chosen = next((b for b in branches if not _is_null(b)), branches[0])
                return self.build(chosen, depth + 1)
        if isinstance(schema.get("allOf"), list):
            return self.build(self.merged(schema, depth), depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = (
                "object"
                if "properties" in schema
                else "array"
                if "items" in schema or "prefixItems" in schema
                else "string"
            )
        if kind == "object":
            return self.object(schema, depth)
        if kind == "array":
            return self.array(schema, depth)
        if kind == "integer":
            return _integer(schema)
        if kind == "number":
            return _number(schema)
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        text = _string(schema)
        self.chars += len(text)
        if self.chars > MAX_CHARS:
            raise self.refuse(f"its strings need more than {MAX_CHARS} characters")
        return text

    def merged(self, schema: Json, depth: int) -> Json:
        """allOf as one schema: the parts' properties and required lists joined."""
        out: Json = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            while isinstance(part, dict) and "$ref" in part:
                depth += 1
                if depth > MAX_DEPTH:
                    raise self.refuse(f"it nests deeper than {MAX_DEPTH} levels")
                part = self.resolve(str(part["$ref"]))
            if not isinstance(part, dict):
                continue
            for key, value in part.items():
                if key == "properties" and isinstance(value, dict):
                    out["properties"] = {**out.get("properties", {}), **value}
                elif key == "required" and isinstance(value, list):
                    out["required"] = [*out.get("required", []), *value]
                else:
                    out.setdefault(key, value)
        return out

    def object(self, schema: Json, depth: int) -> Json:
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = schema.get("required")
        names = [n for n in required if isinstance(n, str)] if isinstance(required, list) else []
        return {name: self.build(properties.get(name, {}), depth + 1) for name in names}

    def array(self, schema: Json, depth: int) -> list[Any]:
        count = schema.get("minItems", 0)
        count = count if isinstance(count, int) and count > 0 else 0
        if count > MAX_VALUES:
            raise self.refuse(f"it needs more than {MAX_VALUES} values")
        prefix = schema.get("prefixItems")
        prefix = prefix if isinstance(prefix, list) else []
        items = schema.get("items", {})
        return [
            self.build(prefix[i] if i < len(prefix) else items, depth + 1) for i in range(count)
        ]


def _is_null(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("type") == "null"


def _number_bounds(schema: Json) -> tuple[float, float]:
    low, high = -math.inf, math.inf
    for key, value in schema.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if key == "minimum":
            low = max(low, value)
        elif key == "exclusiveMinimum":
            low = max(low, math.nextafter(value, math.inf))
        elif key == "maximum":
            high = min(high, value)
        elif key == "exclusiveMaximum":
            high = min(high, math.nextafter(value, -math.inf))
    return low, high


def _integer(schema: Json) -> int:
    low, high = _number_bounds(schema)
    step = schema.get("multipleOf")
    step = step if isinstance(step, int) and not isinstance(step, bool) and step > 0 else 1
    if low <= 0 <= high:
        return 0
    start = math.ceil(low / step) * step if low > 0 else math.floor(high / step) * step
    return int(start)


def _number(schema: Json) -> int | float:
    low, high = _number_bounds(schema)
    if low <= 0 <= high:
        return 0
    step = schema.get("multipleOf")
    if isinstance(step, int | float) and not isinstance(step, bool) and step > 0:
        value = math.ceil(low / step) * step if low > 0 else math.floor(high / step) * step
        return int(value) if float(value).is_integer() else value
    if low > 0:
        return math.ceil(low) if math.ceil(low) <= high else low
    return math.floor(high) if math.floor(high) >= low else high


def _string(schema: Json) -> str:
    fmt = schema.get("format")
    text = _FORMATS.get(fmt, "mock") if isinstance(fmt, str) else "mock"
    shortest = schema.get("minLength")
    longest = schema.get("maxLength")
    if isinstance(shortest, int) and len(text) < shortest:
        text = text + "m" * min(shortest - len(text), MAX_CHARS + 1)
    if isinstance(longest, int) and longest >= 0 and len(text) > longest:
        text = text[:longest]
    return text


def instance(schema: Any, param: str) -> Any:
    """A minimal value valid against ``schema`` (the module's docstring says how)."""
    root = schema if isinstance(schema, dict) else {}
    return _Builder(root, param).build(schema)


def structured_text(body: Json, reply: str) -> str | None:
    """The answer's text when response_format asks for JSON (None: plain text)."""
    fmt = body.get("response_format")
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_object":
        return orjson.dumps({"reply": reply}).decode()
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema", {}) if isinstance(spec, dict) else {}
        return orjson.dumps(instance(schema, "response_format.json_schema.schema")).decode()
    return None


def tool_call(body: Json) -> Json | None:
    """The function call the answer makes, or None for a text answer (rule: module doc)."""
    tools = function_tools(body)
    if not tools:
        return None
    choice = body.get("tool_choice", "auto")
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools")
        allowed = allowed if isinstance(allowed, dict) else {}
        names = {
            t.get("function", {}).get("name")
            for t in allowed.get("tools") or []
            if isinstance(t, dict) and isinstance(t.get("function"), dict)
        }
        tools = [t for t in tools if t["name"] in names] or tools
        choice = allowed.get("mode", "auto")
    if choice == "none":
        return None
    if isinstance(choice, dict):
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else choice.get("name")
        tool = next((t for t in tools if t["name"] == name), None)
        if tool is None:
            raise ProviderError(
                "client",
                f"tool_choice names {name!r}, which is not among the tools.",
                param="tool_choice",
            )
    else:
        messages = body.get("messages") or []
        last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
        if choice != "required" and last.get("role") == "tool":
            return None  # auto after a tool's result: the answer is text
        tool = tools[0]
    at = next(i for i, t in enumerate(body["tools"]) if _named(t, tool["name"]))
    arguments = instance(
        tool.get("parameters", {"type": "object"}), f"tools[{at}].function.parameters"
    )
    return {
        "id": "call_mock" + secrets.token_hex(8),
        "type": "function",
        "function": {"name": tool["name"], "arguments": orjson.dumps(arguments).decode()},
    }


def _named(tool: Any, name: str) -> bool:
    fn = tool.get("function") if isinstance(tool, dict) else None
    return tool.get("type") == "function" and isinstance(fn, dict) and fn.get("name") == name
