"""Fake Gemini generateContent / streamGenerateContent / batchEmbedContents."""

from __future__ import annotations

from typing import Any

from tests.fakes import sdk_types
from tests.fakes.base import API_KEY, PROMPT_TOKENS, FakeHandler, sse

# -- Gemini ------------------------------------------------------------------------------------


#: What Gemini's function declarations refuse under ``parameters`` (an OpenAPI subset);
#: ``parametersJsonSchema`` takes full JSON Schema.
OPENAPI_SUBSET_REFUSES = ("additionalProperties", "$schema", "$defs", "$ref", "const")


def _outside_subset(schema: Any) -> str | None:
    if isinstance(schema, dict):
        for name in OPENAPI_SUBSET_REFUSES:
            if name in schema:
                return name
        if isinstance(schema.get("type"), list):
            return "type"
        for value in schema.values():
            found = _outside_subset(value)
            if found:
                return found
    elif isinstance(schema, list):
        for value in schema:
            found = _outside_subset(value)
            if found:
                return found
    return None


def _invalid(message: str, reason: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}
    if reason:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
            }
        ]
    return {"error": error}


class GeminiMethod(FakeHandler):
    """Refuses what Gemini's API refuses (documented, and seen in its users' reports): a bad
    key as a 400 whose reason is API_KEY_INVALID, penalties, JSON mode with tools, JSON
    Schema outside the OpenAPI subset under ``parameters``, ``image/*`` as a MIME type, and
    on Gemini 3 a function call sent back without its thought signature."""

    def refusal(self, model: str, method: str) -> dict[str, Any] | None:
        body = self.seen.body
        if self.request.headers.get("x-goog-api-key") != API_KEY:
            return _invalid("API key not valid. Please pass a valid API key.", "API_KEY_INVALID")
        if method != "batchEmbedContents":
            # First what google-genai's own types allow (unknown fields, types).
            for problem in sdk_types.gemini_generate(body):
                return _invalid(f"Invalid JSON payload received. {problem}")
        config = body.get("generationConfig") or {}
        for penalty in ("presencePenalty", "frequencyPenalty"):
            if penalty in config:
                return _invalid(f"Penalty is not enabled for models/{model}")
        if config.get("responseMimeType") == "application/json" and body.get("tools"):
            return _invalid(
                "Function calling with a response mime type: 'application/json' is unsupported"
            )
        for tool in body.get("tools") or []:
            for declaration in tool.get("functionDeclarations") or []:
                found = _outside_subset(declaration.get("parameters"))
                if found:
                    return _invalid(f'Invalid JSON payload received. Unknown name "{found}"')
        for content in body.get("contents") or []:
            for part in content.get("parts") or []:
                if (part.get("fileData") or {}).get("mimeType") == "image/*":
                    return _invalid("Unsupported MIME type: image/*")
                if (
                    model.startswith("gemini-3")
                    and content.get("role") == "model"
                    and "functionCall" in part
                    and not part.get("thoughtSignature")
                ):
                    return _invalid(
                        "Function call is missing a thought_signature in functionCall parts."
                    )
        return None

    def call_parts(self, model: str, fn: str | None) -> list[dict[str, Any]]:
        """One call, or with the ``calls`` directive several in the same content (Gemini
        sends parallel calls as parts of one chunk; only the first carries a signature)."""
        parts: list[dict[str, Any]] = []
        for i in range(int(self.directive.get("calls", 1))):
            city = ["Paris", "Lyon", "Nice"][i % 3]
            part: dict[str, Any] = {"functionCall": {"name": fn, "args": {"city": city}}}
            if model.startswith("gemini-3") and i == 0:
                part["thoughtSignature"] = "c2lnbmF0dXJlLWZyb20tZ2VtaW5pLTM="
            parts.append(part)
        return parts

    def usage(self) -> dict[str, int]:
        words = len(self.words())
        return {
            "promptTokenCount": PROMPT_TOKENS,
            "candidatesTokenCount": words,
            "totalTokenCount": PROMPT_TOKENS + words,
        }

    async def post(self, model: str, method: str) -> None:
        body = self.seen.body
        refused = self.refusal(model, method)
        if refused is not None:
            self.set_status(400)
            self.finish(refused)
            return
        if method == "batchEmbedContents":
            self.finish({"embeddings": [{"values": [0.1, 0.2, 0.3]} for _ in body["requests"]]})
            return
        if self.directive.get("blocked"):
            blocked = {
                "promptFeedback": {"blockReason": "SAFETY"},
                "usageMetadata": {"promptTokenCount": PROMPT_TOKENS, "totalTokenCount": 11},
                "modelVersion": model,
            }
            if method == "generateContent":
                self.finish(blocked)
            else:
                await self.send_events([sse(blocked, crlf=True)])
            return
        if not body.get("contents"):
            self.set_status(400)
            self.finish(
                {
                    "error": {
                        "code": 400,
                        "message": "contents is required",
                        "status": "INVALID_ARGUMENT",
                    }
                }
            )
            return
        if self.directive.get("finish"):
            # An answer stopped with no content at all: SAFETY, MALFORMED_FUNCTION_CALL ...
            empty = {
                "candidates": [
                    {
                        "finishReason": self.directive["finish"],
                        "finishMessage": "Malformed function call: print(default_api.x(",
                        "index": 0,
                    }
                ],
                "usageMetadata": {"promptTokenCount": PROMPT_TOKENS, "totalTokenCount": 11},
                "modelVersion": model,
            }
            if method == "generateContent":
                self.finish(empty)
            else:
                await self.send_events([sse(empty, crlf=True)])
            return
        count = int((body.get("generationConfig") or {}).get("candidateCount") or 1)
        tool = self.wants_tool()
        fn = body["tools"][0]["functionDeclarations"][0]["name"] if tool else None
        if method == "generateContent":
            parts = self.call_parts(model, fn) if tool else [{"text": self.text()}]
            self.finish(
                {
                    "candidates": [
                        {
                            "content": {"role": "model", "parts": parts},
                            "finishReason": "STOP",
                            "index": i,
                        }
                        for i in range(count)
                    ],
                    "usageMetadata": self.usage(),
                    "modelVersion": model,
                    "responseId": "fake-response",
                }
            )
            return
        assert method == "streamGenerateContent" and self.seen.query.get("alt") == "sse"
        events = []
        if tool:
            events.append(
                sse(
                    {
                        "candidates": [
                            {
                                "content": {
                                    "role": "model",
                                    "parts": self.call_parts(model, fn),
                                },
                                "finishReason": "STOP",
                                "index": 0,
                            }
                        ],
                        "usageMetadata": self.usage(),
                        "modelVersion": model,
                    },
                    crlf=True,
                )
            )
        else:
            words = self.words()
            for i, word in enumerate(words):
                last = i == len(words) - 1
                frame: dict[str, Any] = {
                    "candidates": [
                        {
                            "content": {"role": "model", "parts": [{"text": word}]},
                            **({"finishReason": "STOP"} if last else {}),
                            "index": 0,
                        }
                    ],
                    "modelVersion": model,
                }
                frame["usageMetadata"] = (
                    self.usage() if last else {"promptTokenCount": PROMPT_TOKENS}
                )
                events.append(sse(frame, crlf=True))
                if i == 0 and self.directive.get("stream_error"):
                    # What Gemini sends when a stream fails after it started.
                    error = {
                        "code": 503,
                        "message": "The model is overloaded.",
                        "status": "UNAVAILABLE",
                    }
                    events.append(sse({"error": error}, crlf=True))
                    break
        await self.send_events(events)
