"""Fake Anthropic Messages API, with its streaming event sequence."""

from __future__ import annotations

from tests.fakes.base import API_KEY, PROMPT_TOKENS, TOOL_ARGS, FakeHandler, sse

# -- Anthropic ---------------------------------------------------------------------------------


class AnthropicMessages(FakeHandler):
    def auth_problem(self) -> str | None:
        if self.request.headers.get("x-api-key") != API_KEY:
            return "invalid x-api-key"
        if not self.request.headers.get("anthropic-version"):
            return "anthropic-version header is required"
        return None

    async def post(self) -> None:
        body = self.seen.body
        if "max_tokens" not in body or not body.get("messages"):
            self.set_status(400)
            self.finish(
                {
                    "type": "error",
                    "error": {
                        "type": "invalid_request_error",
                        "message": "max_tokens: Field required",
                    },
                }
            )
            return
        model = body["model"]
        tool = self.wants_tool()
        usage = {
            "input_tokens": PROMPT_TOKENS,
            "output_tokens": len(self.words()),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        tool_block = (
            {
                "type": "tool_use",
                "id": "toolu_fake1",
                "name": body["tools"][0]["name"],
                "input": {"city": "Paris"},
            }
            if tool
            else None
        )
        if not body.get("stream"):
            content = [tool_block] if tool_block else [{"type": "text", "text": self.text()}]
            self.finish(
                {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": "tool_use" if tool else "end_turn",
                    "stop_sequence": None,
                    "usage": usage,
                }
            )
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
                        "usage": {
                            "input_tokens": PROMPT_TOKENS,
                            "output_tokens": 1,
                            "cache_creation_input_tokens": 0,
                            "cache_read_input_tokens": 0,
                        },
                    },
                },
                "message_start",
            )
        ]
        if tool_block:
            events.append(
                sse(
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {
                            "type": "tool_use",
                            "id": "toolu_fake1",
                            "name": tool_block["name"],
                            "input": {},
                        },
                    },
                    "content_block_start",
                )
            )
            events.append(sse({"type": "ping"}, "ping"))
            for piece in TOOL_ARGS:
                events.append(
                    sse(
                        {
                            "type": "content_block_delta",
                            "index": 0,
                            "delta": {"type": "input_json_delta", "partial_json": piece},
                        },
                        "content_block_delta",
                    )
                )
        else:
            events.append(
                sse(
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                    "content_block_start",
                )
            )
            events.append(sse({"type": "ping"}, "ping"))
            for word in self.words():
                events.append(
                    sse(
                        {
                            "type": "content_block_delta",
                            "index": 0,
                            "delta": {"type": "text_delta", "text": word},
                        },
                        "content_block_delta",
                    )
                )
        events.append(sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
        events.append(
            sse(
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": "tool_use" if tool else "end_turn",
                        "stop_sequence": None,
                    },
                    "usage": {"output_tokens": len(self.words())},
                },
                "message_delta",
            )
        )
        events.append(sse({"type": "message_stop"}, "message_stop"))
        await self.send_events(events)
