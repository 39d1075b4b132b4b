"""Fake Gemini generateContent / streamGenerateContent / batchEmbedContents."""

from __future__ import annotations

from typing import Any

from tests.fakes.base import API_KEY, PROMPT_TOKENS, FakeHandler, sse

# -- Gemini ------------------------------------------------------------------------------------


class GeminiMethod(FakeHandler):
    def auth_problem(self) -> str | None:
        if self.request.headers.get("x-goog-api-key") != API_KEY:
            return "API key not valid. Please pass a valid API key."
        return None

    def usage(self) -> dict[str, int]:
        words = len(self.words())
        return {
            "promptTokenCount": PROMPT_TOKENS,
            "candidatesTokenCount": words,
            "totalTokenCount": PROMPT_TOKENS + words,
        }

    async def post(self, model: str, method: str) -> None:
        body = self.seen.body
        if method == "batchEmbedContents":
            self.finish({"embeddings": [{"values": [0.1, 0.2, 0.3]} for _ in body["requests"]]})
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
        count = int((body.get("generationConfig") or {}).get("candidateCount") or 1)
        tool = self.wants_tool()
        fn = body["tools"][0]["functionDeclarations"][0]["name"] if tool else None
        if method == "generateContent":
            parts = (
                [{"functionCall": {"name": fn, "args": {"city": "Paris"}}}]
                if tool
                else [{"text": self.text()}]
            )
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
                                    "parts": [
                                        {"functionCall": {"name": fn, "args": {"city": "Paris"}}}
                                    ],
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
        await self.send_events(events)
