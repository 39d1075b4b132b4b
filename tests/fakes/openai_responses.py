"""Fake OpenAI Responses API (POST /v1/responses), for the gateway's native relay.

Requests are checked against OpenAI's own CreateResponse schema (from its OpenAPI
document) and answers are built through the openai SDK's Response type, so a shape
either side gets wrong fails here as it would against OpenAI. Like OpenAI it keeps what
it answered, so ``previous_response_id`` works only with an id it issued.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import jsonschema
from openai.types.responses import Response

from tests.fakes.base import API_KEY, PROMPT_TOKENS, WORDS, FakeHandler, sse
from tests.openai_schemas import validate

MODEL = "gpt-4o-2024-08-06"


def _error(message: str, param: str | None, code: str | None = None) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    }


class OpenAIResponses(FakeHandler):
    def auth_problem(self) -> str | None:
        if self.request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return "Incorrect API key provided."
        return None

    def _refuse(self, message: str, param: str | None, code: str | None = None) -> None:
        self.set_status(400)
        self.finish(_error(message, param, code))

    def _response(self, body: dict[str, Any], status: str, output: list[Any]) -> dict[str, Any]:
        words = len(WORDS)
        data: dict[str, Any] = {
            "id": "resp_up_" + uuid.uuid4().hex,
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "model": MODEL,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": body.get("previous_response_id"),
            "temperature": 1.0,
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "metadata": {},
        }
        if status == "completed":
            data["usage"] = {
                "input_tokens": PROMPT_TOKENS,
                "input_tokens_details": {"cached_tokens": 2, "cache_write_tokens": 0},
                "output_tokens": words,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": PROMPT_TOKENS + words,
            }
        # Through the SDK's own type: a field OpenAI always sends cannot go missing here.
        return Response.model_validate(data).model_dump(mode="json", exclude_unset=True)

    async def post(self, *args: str) -> None:
        body = self.seen.body
        try:
            validate(body, "CreateResponse")
        except jsonschema.ValidationError as exc:
            self._refuse(f"Invalid request: {exc.message}", ".".join(map(str, exc.path)) or None)
            return
        previous = body.get("previous_response_id")
        if previous is not None and previous not in self.fake.responses:
            self._refuse(
                f"Previous response with id '{previous}' not found.",
                "previous_response_id",
                "previous_response_not_found",
            )
            return
        text = self.text()
        message = {
            "id": "msg_up_" + uuid.uuid4().hex,
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
        }
        done = self._response(body, "completed", [message])
        if body.get("store", True):
            self.fake.responses[done["id"]] = done
        if not body.get("stream"):
            self.finish(done)
            return
        start = self._response(body, "in_progress", [])
        start["id"] = done["id"]
        events: list[bytes] = []
        seq = 0

        def event(kind: str, **fields: Any) -> None:
            nonlocal seq
            events.append(sse({"type": kind, "sequence_number": seq, **fields}, event=kind))
            seq += 1

        event("response.created", response=start)
        event("response.in_progress", response=start)
        opened = {**message, "status": "in_progress", "content": []}
        event("response.output_item.added", output_index=0, item=opened)
        ids = {"item_id": message["id"], "output_index": 0, "content_index": 0}
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        event("response.content_part.added", **ids, part=part)
        for word in self.words():
            event("response.output_text.delta", **ids, delta=word, logprobs=[])
        event("response.output_text.done", **ids, text=text, logprobs=[])
        event("response.content_part.done", **ids, part=message["content"][0])
        event("response.output_item.done", output_index=0, item=message)
        event("response.completed", response=done)
        await self.send_events(events)
