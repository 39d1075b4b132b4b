"""The Responses API's request parameters checked as OpenAI's API checks them: a 400 in
its words, naming the parameter, for a value it refuses, whatever the backend (most are
echoed in the Response, where the SDK reads them by the spec). Only the parameters a body
holds are read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conduit_tornado.core.errors import ApiError
from conduit_tornado.routing.providers.base import Json


def invalid(message: str, param: str, code: str = "invalid_value") -> ApiError:
    """A 400 naming the parameter (the Responses routes' refusals)."""
    return ApiError(400, message, param=param, code=code)


#: A check of one parameter's (non-null) value, given the name to report it by.
_Check = Callable[[Any, str], None]


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def wrong_type(value: Any, param: str, expected: str) -> ApiError:
    return invalid(
        f"Invalid type for '{param}': expected {expected}, but got {_kind(value)} instead.",
        param,
        "invalid_type",
    )


def _boolean(value: Any, param: str) -> None:
    # Read by truthiness otherwise: "false" would stream, or run in the background.
    if not isinstance(value, bool):
        raise wrong_type(value, param, "a boolean")


def _string(most: int | None = None) -> _Check:
    def check(value: Any, param: str) -> None:
        if not isinstance(value, str):
            raise wrong_type(value, param, "a string")
        if most is not None and len(value) > most:
            raise invalid(
                f"Invalid '{param}': string too long. Expected a string with maximum length "
                f"{most}, but got a string with length {len(value)} instead.",
                param,
                "string_above_max_length",
            )

    return check


def _number(low: float, high: float | None, integer: bool = False) -> _Check:
    expected = "an integer" if integer else "a number"
    span = f"at least {low}" if high is None else f"from {low} to {high}"

    def check(value: Any, param: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
            raise wrong_type(value, param, expected)
        if value < low or (high is not None and value > high):
            raise invalid(
                f"Invalid '{param}': expected {expected} {span}, but got {value} instead.",
                param,
            )

    return check


def _one_of(*values: str) -> _Check:
    supported = ", ".join(repr(v) for v in values)

    def check(value: Any, param: str) -> None:
        if not isinstance(value, str):
            raise wrong_type(value, param, f"one of {supported}")
        if value not in values:
            raise invalid(
                f"Invalid value for '{param}': {value!r}. Supported values are: {supported}.",
                param,
            )

    return check


def _array_of(each: _Check) -> _Check:
    def check(value: Any, param: str) -> None:
        if not isinstance(value, list):
            raise wrong_type(value, param, "an array")
        for index, item in enumerate(value):
            each(item, f"{param}[{index}]")

    return check


def _object_with(**fields: _Check) -> _Check:
    """An object whose named fields, when set, pass their checks (others are not read)."""

    def check(value: Any, param: str) -> None:
        if not isinstance(value, dict):
            raise wrong_type(value, param, "an object")
        for name, field_check in fields.items():
            if value.get(name) is not None:
                field_check(value[name], f"{param}.{name}")

    return check


_SUMMARY = _one_of("auto", "concise", "detailed")
#: The request parameters OpenAI's API refuses some values of, with the values it takes
#: (its OpenAPI spec: CreateResponse and what it is made of). They are checked whatever
#: the backend, as most are echoed in the Response, where the SDK reads them by the spec.
_CHECKS: dict[str, _Check] = {
    "stream": _boolean,
    "background": _boolean,
    "store": _boolean,
    "parallel_tool_calls": _boolean,
    "temperature": _number(0, 2),
    "top_p": _number(0, 1),
    "top_logprobs": _number(0, 20, integer=True),
    "max_tool_calls": _number(1, None, integer=True),
    "user": _string(),
    "safety_identifier": _string(64),
    "prompt_cache_key": _string(),
    "prompt_cache_retention": _one_of("in_memory", "24h"),
    "truncation": _one_of("auto", "disabled"),
    "service_tier": _one_of("auto", "default", "flex", "scale", "priority", "fast", "ultrafast"),
    "include": _array_of(
        _one_of(
            "file_search_call.results",
            "web_search_call.results",
            "web_search_call.action.sources",
            "message.input_image.image_url",
            "computer_call_output.output.image_url",
            "code_interpreter_call.outputs",
            "reasoning.encrypted_content",
            "message.output_text.logprobs",
        )
    ),
    "text": _object_with(verbosity=_one_of("low", "medium", "high")),
    "reasoning": _object_with(
        effort=_one_of("none", "minimal", "low", "medium", "high", "xhigh", "max"),
        summary=_SUMMARY,
        generate_summary=_SUMMARY,
        context=_one_of("auto", "current_turn", "all_turns"),
    ),
}
#: The parameters check_params reads: a body holding none of them needs no call.
CHECKED_PARAMS = frozenset({*_CHECKS, "tool_choice"})


def check_params(body: Json) -> None:
    """400 naming the parameter for a value OpenAI's API refuses; only the parameters the
    body holds are read."""
    for name, value in body.items():
        check = _CHECKS.get(name)
        if check is not None and value is not None:
            check(value, name)
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        choice = choice.get("type")
    if choice in ("required", "function") and not body.get("tools"):
        raise invalid(
            f"Tool choice {choice!r} must be specified with 'tools' parameter.", "tool_choice"
        )
