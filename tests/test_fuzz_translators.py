"""Property-based fuzzing of the Anthropic and Gemini translators
(routing/providers/anthropic.py, gemini.py).

Requests come from clients and answers from providers: neither is trusted. What a
translator may raise is ProviderError (the gateway answers it with its status); any other
exception is a 500. Round trips: the text a client sends is the text the provider gets, in
order, and the text a provider answers is the text the client gets."""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conduit_tornado.routing.providers.anthropic import from_anthropic, to_anthropic
from conduit_tornado.routing.providers.gemini import from_gemini, to_gemini
from conduit_tornado.routing.upstream import ProviderError

FUZZ = settings(
    max_examples=200,
    deadline=500,  # ms per example: generous on a busy machine, still catches blow-ups
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
REQUEST_KEYS = [
    "messages",
    "tools",
    "tool_choice",
    "stop",
    "response_format",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "n",
    "seed",
    "user",
    "parallel_tool_calls",
]
MESSAGE_KEYS = ["role", "content", "tool_calls", "tool_call_id", "name"]
PART_KEYS = ["type", "text", "image_url", "url", "function", "id", "arguments", "name"]
ANSWER_KEYS = [
    "type",
    "id",
    "model",
    "content",
    "text",
    "input",
    "name",
    "stop_reason",
    "usage",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "candidates",
    "parts",
    "functionCall",
    "args",
    "finishReason",
    "index",
    "usageMetadata",
    "promptTokenCount",
    "candidatesTokenCount",
    "promptFeedback",
    "blockReason",
    "responseId",
    "modelVersion",
]
ROLES = st.sampled_from(["system", "developer", "user", "assistant", "tool", "other"])


def json_values(keys: list[str]) -> st.SearchStrategy[Any]:
    """Any JSON, its objects' keys mostly the ones the code reads."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(2**40), 2**40)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=8)
        | st.sampled_from(["text", "function", "tool_use", "image_url", "data:,", "required"])
    )
    names = st.sampled_from(keys) | st.text(max_size=4)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=4),
        max_leaves=12,
    )


# What the chat handler lets through (api/inference.py): a non-empty list of objects that
# each have a string role, their content a string, null, or a list of objects whose text,
# if any, is a string; everything else is as the client sent it.
PART = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["text", "image_url", "input_audio"]) | st.text(max_size=4),
        "text": st.text(max_size=10),
        "image_url": json_values(PART_KEYS),
    },
)
CONTENT = st.none() | st.text(max_size=10) | st.lists(PART, max_size=3)
MESSAGE = st.fixed_dictionaries(
    {"role": ROLES},
    optional={
        "content": CONTENT,
        **{k: json_values(PART_KEYS) for k in ("tool_calls", "tool_call_id", "name")},
    },
)
REQUEST = st.fixed_dictionaries(
    {"messages": st.lists(MESSAGE, min_size=1, max_size=4)},
    optional={k: json_values(PART_KEYS + MESSAGE_KEYS) for k in REQUEST_KEYS[1:]},
)
ANSWER = st.dictionaries(st.sampled_from(ANSWER_KEYS), json_values(ANSWER_KEYS), max_size=8)


@FUZZ
@given(REQUEST)
@example({"messages": [{"role": "user"}], "tools": [{"type": "function"}]})
def test_to_anthropic_raises_only_provider_errors(body: dict[str, Any]) -> None:
    with contextlib.suppress(ProviderError):
        to_anthropic(body, "claude")


@FUZZ
@given(REQUEST)
@example({"messages": [{"role": "user"}], "response_format": "json_object"})
def test_to_gemini_raises_only_provider_errors(body: dict[str, Any]) -> None:
    with contextlib.suppress(ProviderError):
        to_gemini(body)


@FUZZ
@given(ANSWER)
@example({"type": "message", "content": ["text"]})
def test_from_anthropic_raises_only_provider_errors(data: dict[str, Any]) -> None:
    with contextlib.suppress(ProviderError):
        from_anthropic(data, "claude")


@FUZZ
@given(ANSWER)
@example({"candidates": [None]})
def test_from_gemini_raises_only_provider_errors(data: dict[str, Any]) -> None:
    with contextlib.suppress(ProviderError):
        from_gemini(data, "gemini")


# -- round trips over well-typed input -----------------------------------------------------

TEXT = st.text(max_size=30)
PLAIN = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant"]), "content": TEXT}
    ),
    min_size=1,
    max_size=6,
)


def _said(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in messages if m["role"] != "system" and m["content"]]


@FUZZ
@given(PLAIN)
def test_anthropic_request_keeps_every_text_in_order(messages: list[dict[str, Any]]) -> None:
    out = to_anthropic({"messages": messages}, "claude")
    got = [(m["role"], b["text"]) for m in out["messages"] for b in m["content"]]
    assert got == _said(messages)
    roles = [m["role"] for m in out["messages"]]
    assert all(a != b for a, b in itertools.pairwise(roles))  # turns alternate
    system = [m["content"] for m in messages if m["role"] == "system" and m["content"]]
    assert out.get("system", "") == "\n\n".join(system)


@FUZZ
@given(PLAIN)
def test_gemini_request_keeps_every_text_in_order(messages: list[dict[str, Any]]) -> None:
    out = to_gemini({"messages": messages})
    got = [(c["role"], p["text"]) for c in out["contents"] for p in c["parts"]]
    assert got == [("model" if r == "assistant" else r, t) for r, t in _said(messages)]
    system = [m["content"] for m in messages if m["role"] == "system"]
    if system:
        assert out["systemInstruction"]["parts"][0]["text"] == "\n\n".join(system)


COUNT = st.integers(0, 10**6)


@FUZZ
@given(st.lists(TEXT, max_size=4), COUNT, COUNT, COUNT)
def test_anthropic_answer_text_and_usage(texts: list[str], i: int, o: int, cached: int) -> None:
    data = {
        "type": "message",
        "id": "msg_1",
        "content": [{"type": "text", "text": t} for t in texts],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": i, "output_tokens": o, "cache_read_input_tokens": cached},
    }
    out = from_anthropic(data, "claude")
    assert out["choices"][0]["message"]["content"] == "".join(texts)
    usage = out["usage"]
    assert usage["prompt_tokens"] == i + cached and usage["completion_tokens"] == o
    assert usage["total_tokens"] == i + cached + o


@FUZZ
@given(st.lists(st.lists(TEXT, max_size=3), min_size=1, max_size=3), COUNT, COUNT)
def test_gemini_answer_text_and_usage(candidates: list[list[str]], p: int, c: int) -> None:
    data = {
        "candidates": [
            {"content": {"parts": [{"text": t} for t in texts]}, "finishReason": "STOP"}
            for texts in candidates
        ],
        "usageMetadata": {"promptTokenCount": p, "candidatesTokenCount": c},
    }
    out = from_gemini(data, "gemini")
    assert [ch["message"]["content"] for ch in out["choices"]] == ["".join(t) for t in candidates]
    assert out["usage"]["total_tokens"] == p + c
