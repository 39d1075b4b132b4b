"""Fake Anthropic Messages API, with its streaming event sequence."""

from __future__ import annotations

from typing import Any

from tests.fakes import anthropic_streams, sdk_types
from tests.fakes.base import API_KEY, PROMPT_TOKENS, FakeHandler, sse

# -- Anthropic ---------------------------------------------------------------------------------


class AnthropicMessages(FakeHandler):
    def auth_problem(self) -> str | None:
        if self.request.headers.get("x-api-key") != API_KEY:
            return "invalid x-api-key"
        if not self.request.headers.get("anthropic-version"):
            return "anthropic-version header is required"
        return None

    def refusal(self) -> str | None:
        """What Anthropic's API refuses, as documented for current Claude models."""
        body = self.seen.body
        # First what the SDK's own request types allow (unknown fields, types, required).
        for problem in sdk_types.anthropic_messages(body):
            return problem.removeprefix("body.")
        if not body.get("messages"):
            return "max_tokens: Field required"
        temperature = body.get("temperature")
        if temperature is not None and not 0 <= temperature <= 1:
            return "temperature: Input should be less than or equal to 1"
        if temperature is not None and body.get("top_p") is not None:
            return "`temperature` and `top_p` cannot both be specified for this model."
        for stop in body.get("stop_sequences") or []:
            if not stop.strip():
                return "stop_sequences: each stop sequence must contain non-whitespace"
        choice = body.get("tool_choice") or {}
        if choice.get("type") == "none" and "disable_parallel_tool_use" in choice:
            return "tool_choice.none: Extra inputs are not permitted"
        return None

    async def post(self) -> None:
        body = self.seen.body
        refused = self.refusal()
        if refused:
            self.set_status(400)
            self.finish(
                {"type": "error", "error": {"type": "invalid_request_error", "message": refused}}
            )
            return
        model = body["model"]
        tool = self.wants_tool()
        # Scripted: cache counts as Anthropic reports them, a stop reason, a call without
        # arguments, text before the call, parallel calls, thinking, error events.
        usage = {
            "input_tokens": PROMPT_TOKENS,
            "output_tokens": len(self.words()),
            "cache_creation_input_tokens": self.directive.get("cache_write", 0),
            "cache_read_input_tokens": self.directive.get("cache_read", 0),
        }
        if "cache_write_1h" in self.directive:  # the split of the writes by lifetime
            hour = self.directive["cache_write_1h"]
            usage["cache_creation_input_tokens"] += hour
            usage["cache_creation"] = {
                "ephemeral_5m_input_tokens": self.directive.get("cache_write", 0),
                "ephemeral_1h_input_tokens": hour,
            }
        no_args = bool(self.directive.get("no_args"))
        blocks: list[dict[str, Any]] = []
        if self.directive.get("thinking"):
            blocks.append(
                {"type": "thinking", "thinking": "Let me think.", "signature": "c2lnbmF0dXJl"}
            )
        if not tool or self.directive.get("text_then_tool"):
            blocks.append({"type": "text", "text": self.text()})
        if tool:
            for i in range(2 if self.directive.get("parallel") else 1):
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": f"toolu_fake{i + 1}",
                        "name": body["tools"][0]["name"],
                        "input": {} if no_args else {"city": ["Paris", "Lyon"][i]},
                    }
                )
        stop_reason = self.directive.get("stop_reason") or ("tool_use" if tool else "end_turn")
        if not body.get("stream"):
            self.finish(
                {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": blocks,
                    "stop_reason": stop_reason,
                    "stop_sequence": None,
                    "usage": usage,
                }
            )
            return
        if self.directive.get("replay"):
            await self.send_events(anthropic_streams.frames(self.directive["replay"], model))
            return
        error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        if self.directive.get("error_event") == "first":
            await self.send_events([sse(error, "error")])
            return
        events = [
            sse(
                {
                    "type": "message_start",
                    "message": {
                        "id": "msg_fake",
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {**usage, "output_tokens": 1},
                    },
                },
                "message_start",
            )
        ]

        def delta(index: int, payload: dict[str, Any]) -> bytes:
            return sse(
                {"type": "content_block_delta", "index": index, "delta": payload},
                "content_block_delta",
            )

        for index, block in enumerate(blocks):
            start = {**block, **({"input": {}} if block["type"] == "tool_use" else {})}
            if block["type"] in ("text", "thinking"):
                start[block["type"]] = ""
            if block["type"] == "thinking":
                start["signature"] = ""
            events.append(
                sse(
                    {"type": "content_block_start", "index": index, "content_block": start},
                    "content_block_start",
                )
            )
            if index == 0:
                events.append(sse({"type": "ping"}, "ping"))
            if block["type"] == "thinking":
                events.append(
                    delta(index, {"type": "thinking_delta", "thinking": block["thinking"]})
                )
                events.append(
                    delta(index, {"type": "signature_delta", "signature": block["signature"]})
                )
            elif block["type"] == "text":
                for word in self.words():
                    events.append(delta(index, {"type": "text_delta", "text": word}))
                if self.directive.get("error_event") == "mid":
                    events.append(sse(error, "error"))
                    await self.send_events(events)
                    return
            else:
                pieces = [""] if no_args else ['{"city": ', f'"{block["input"]["city"]}"}}']
                for piece in pieces:
                    events.append(delta(index, {"type": "input_json_delta", "partial_json": piece}))
            events.append(sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
        events.append(
            sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": len(self.words())},
                },
                "message_delta",
            )
        )
        events.append(sse({"type": "message_stop"}, "message_stop"))
        await self.send_events(events)
