"""Fake moderation (OpenAI) and rerank (the shape vLLM, Jina and Cohere share) endpoints,
and the model lists health checks ask for (every provider type's)."""

from __future__ import annotations

from typing import Any

from openai.types import ModerationCreateResponse

from tests.fakes.base import API_KEY, FakeHandler

CATEGORIES = [
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
]


class Authorized(FakeHandler):
    def auth_problem(self) -> str | None:
        if self.request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return "Incorrect API key provided."
        return None


class OpenAIModerations(Authorized):
    async def post(self, *args: str) -> None:
        raw = self.seen.body.get("input")
        inputs = raw if isinstance(raw, list) else [raw]
        results = []
        for item in inputs:
            text = item if isinstance(item, str) else str(item.get("text", ""))
            flagged = "attack" in text
            results.append(
                {
                    "flagged": flagged,
                    "categories": {c: flagged and c == "violence" for c in CATEGORIES},
                    "category_scores": {
                        c: 0.9 if flagged and c == "violence" else 0.001 for c in CATEGORIES
                    },
                    "category_applied_input_types": {c: ["text"] for c in CATEGORIES},
                }
            )
        answer = {"id": "modr-fake", "model": "omni-moderation-2024-09-26", "results": results}
        # Through the SDK's own type, so the fake cannot drift from OpenAI's shape.
        self.finish(
            ModerationCreateResponse.model_validate(answer).model_dump(mode="json", by_alias=True)
        )


class Rerank(Authorized):
    async def post(self, *args: str) -> None:
        body = self.seen.body
        query = set(str(body["query"]).lower().split())
        docs = [d if isinstance(d, str) else d["text"] for d in body["documents"]]
        scored = sorted(
            (
                {"index": i, "relevance_score": len(query & set(d.lower().split())) / len(query)}
                for i, d in enumerate(docs)
            ),
            key=lambda r: -float(r["relevance_score"]),
        )
        top: list[dict[str, Any]] = scored[: body.get("top_n") or len(scored)]
        self.finish(
            {
                "id": "rerank-fake",
                "model": body["model"],
                "results": top,
                "usage": {"total_tokens": sum(len(d.split()) for d in docs) + len(query)},
                "meta": {"billed_units": {"search_units": 1}},
            }
        )


class ModelList(FakeHandler):
    """GET of a model list, as OpenAI, Azure, Anthropic and Gemini serve it: what active
    health checks call. Scripted like the rest; ``for_model="models"`` aims a directive
    at these calls alone."""

    def auth_problem(self) -> str | None:
        given = {
            self.request.headers.get("Authorization"),
            self.request.headers.get("api-key"),
            self.request.headers.get("x-api-key"),
            self.request.headers.get("x-goog-api-key"),
        }
        return None if {f"Bearer {API_KEY}", API_KEY} & given else "Incorrect API key provided."

    async def get(self, *args: str) -> None:
        self.finish({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
