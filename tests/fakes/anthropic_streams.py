"""Anthropic event sequences shaped like the recorded streams in anthropic-sdk-python's
own test fixtures (tests/lib/streaming/fixtures, tests/fixtures): our own text, their
shapes, including what our first fake never sent — an empty first ``partial_json``, a
``caller`` on tool blocks, a refusal with ``stop_details`` after an empty text block, a
``fallback`` block when Anthropic answers with another model, and data lines padded with
spaces after the JSON. The fake replays one with the ``replay`` directive."""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.base import PROMPT_TOKENS


def _start(model: str, extra_usage: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    usage = {"input_tokens": PROMPT_TOKENS, "output_tokens": 1, **(extra_usage or {})}
    message = {
        "id": "msg_replayed",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": model,
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    return "message_start", {"type": "message_start", "message": message}


def _block(index: int, block: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "content_block_start", {
        "type": "content_block_start",
        "index": index,
        "content_block": block,
    }


def _delta(index: int, delta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}


def _stop(index: int) -> tuple[str, dict[str, Any]]:
    return "content_block_stop", {"type": "content_block_stop", "index": index}


def _end(reason: str, output: int, details: dict[str, Any] | None = None) -> list[Any]:
    delta: dict[str, Any] = {"stop_reason": reason, "stop_sequence": None}
    if details:
        delta["stop_details"] = details
    return [
        (
            "message_delta",
            {"type": "message_delta", "delta": delta, "usage": {"output_tokens": output}},
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


def sequences(model: str) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    return {
        "tool_after_text": [
            _start(model, {"cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}),
            _block(0, {"type": "text", "text": ""}),
            ("ping", {"type": "ping"}),
            _delta(0, {"type": "text_delta", "text": "Let me look"}),
            _delta(0, {"type": "text_delta", "text": " that up."}),
            _stop(0),
            _block(
                1,
                {
                    "type": "tool_use",
                    "id": "toolu_replayed",
                    "name": "get_weather",
                    "caller": {"type": "direct"},
                    "input": {},
                },
            ),
            _delta(1, {"type": "input_json_delta", "partial_json": ""}),
            _delta(1, {"type": "input_json_delta", "partial_json": '{"ci'}),
            _delta(1, {"type": "input_json_delta", "partial_json": 'ty": "Par'}),
            _delta(1, {"type": "input_json_delta", "partial_json": 'is"}'}),
            _stop(1),
            *_end("tool_use", 30),
        ],
        "refusal": [
            _start(model),
            _block(0, {"type": "text", "text": ""}),
            _stop(0),
            *_end("refusal", 0, {"type": "refusal", "category": "cyber", "explanation": "x"}),
        ],
        "fallback": [
            _start(model),
            _block(
                0,
                {
                    "type": "fallback",
                    "from": {"model": model},
                    "to": {"model": "claude-sonnet-4-5"},
                    "trigger": {"type": "refusal", "category": None},
                },
            ),
            _stop(0),
            _block(1, {"type": "text", "text": ""}),
            _delta(1, {"type": "text_delta", "text": "Hello there!"}),
            _stop(1),
            *_end("end_turn", 8),
        ],
        "thinking_padded": [
            _start(
                model,
                {
                    "cache_creation": {
                        "ephemeral_5m_input_tokens": 0,
                        "ephemeral_1h_input_tokens": 0,
                    }
                },
            ),
            _block(0, {"type": "thinking", "thinking": "", "signature": ""}),
            _delta(0, {"type": "thinking_delta", "thinking": "A simple question."}),
            _delta(0, {"type": "thinking_delta", "thinking": ""}),
            _delta(0, {"type": "signature_delta", "signature": "c2lnbmF0dXJl"}),
            _stop(0),
            _block(1, {"type": "text", "text": ""}),
            _delta(1, {"type": "text_delta", "text": "An eclipse is a shadow."}),
            _stop(1),
            *_end("end_turn", 12),
        ],
    }


def frames(name: str, model: str) -> list[bytes]:
    """The sequence as SSE frames; the thinking one with the padding seen in recordings."""
    pad = "   " if name == "thinking_padded" else ""
    return [
        f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}{pad}\n\n".encode()
        for event, data in sequences(model)[name]
    ]
