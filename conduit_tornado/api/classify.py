"""POST /v1/moderations and POST /v1/rerank: one call each to a provider that serves it.

Moderations are free unless the mapping or deployment prices them (per token); a rerank
is priced per token when the provider reports tokens, and records the search units it
reports (Cohere bills by those)."""

from __future__ import annotations

from typing import Any

from conduit_tornado.core.errors import ApiError
from conduit_tornado.routing.providers.base import Json, Usage, estimate_tokens
from conduit_tornado.routing.router import Outcome, Target
from conduit_tornado.routing.upstream import Timeouts

from .proxy import ProxyHandler

#: A moderation request without a model uses the mapping of this name, as OpenAI does.
DEFAULT_MODERATION_MODEL = "omni-moderation-latest"
MAX_INPUTS = 2048
MAX_DOCUMENTS = 1000


def _texts(value: Any, param: str) -> list[str]:
    """The text of a moderation input (strings, or text and image_url parts)."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value or len(value) > MAX_INPUTS:
        raise ApiError(
            400,
            f"{param} must be a string or a non-empty array of at most {MAX_INPUTS} items.",
            param=param,
        )
    texts = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict) and item.get("type") == "text":
            if not isinstance(item.get("text"), str):
                raise ApiError(400, f"{param}[{i}].text must be a string.", param=param)
            texts.append(item["text"])
        elif isinstance(item, dict) and item.get("type") == "image_url":
            url = (
                (item.get("image_url") or {}).get("url")
                if isinstance(item.get("image_url"), dict)
                else None
            )
            if not isinstance(url, str):
                raise ApiError(400, f"{param}[{i}].image_url.url must be a string.", param=param)
        else:
            raise ApiError(
                400,
                f"{param}[{i}] must be a string, a text part or an image_url part.",
                param=param,
            )
    return texts


class ModerationsHandler(ProxyHandler):
    endpoint = "moderations"

    async def post(self) -> None:
        body = self.json_body()
        if body.get("model") is None:
            body["model"] = DEFAULT_MODERATION_MODEL
        texts = _texts(body.get("input"), "input")
        route = self.resolve(body)
        tokens = sum(estimate_tokens(t) for t in texts)
        await self.admit(body, prompt_tokens=tokens, completion_reserve=False)

        async def call(target: Target, t: Timeouts) -> Json:
            return await target.adapter.moderations(body, target.model, t)

        result, self.outcome = await self.ctx.router.run(route, call)
        usage = Usage(tokens, 0, estimated=True)
        self._answer(result, usage, self.outcome, {"inputs": len(result.get("results") or [])})

    def _answer(self, result: Json, usage: Usage, outcome: Outcome, media: Json) -> None:
        target = outcome.target
        price = self.ctx.prices.price(
            target.model, target.deployment.get("pricing"), target.route.pricing
        )
        cost = price.cost(usage) if price is not None else 0.0  # free unless priced
        self.account(usage, outcome, cost=cost, media=media)
        self.answer_headers(outcome, cost)
        result["model"] = self.entry["model"] if self.entry else result.get("model")
        self.send_json(result)


class RerankHandler(ProxyHandler):
    endpoint = "rerank"

    async def post(self) -> None:
        body = self.json_body()
        query = body.get("query")
        if not isinstance(query, str) or not query:
            raise ApiError(400, "query must be a non-empty string.", param="query")
        documents = body.get("documents")
        if not isinstance(documents, list) or not documents or len(documents) > MAX_DOCUMENTS:
            raise ApiError(
                400,
                f"documents must be a non-empty array of at most {MAX_DOCUMENTS} items.",
                param="documents",
            )
        texts = []
        for i, doc in enumerate(documents):
            text = doc.get("text") if isinstance(doc, dict) else doc
            if not isinstance(text, str):
                raise ApiError(
                    400,
                    f"documents[{i}] must be a string or an object with text.",
                    param="documents",
                )
            texts.append(text)
        top_n = body.get("top_n")
        if top_n is not None and (
            not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 1
        ):
            raise ApiError(400, "top_n must be a positive integer.", param="top_n")
        route = self.resolve(body)
        tokens = estimate_tokens(query) * len(texts) + sum(estimate_tokens(t) for t in texts)
        await self.admit(body, prompt_tokens=tokens, completion_reserve=False)

        async def call(target: Target, t: Timeouts) -> Json:
            return await target.adapter.rerank(body, target.model, t)

        result, self.outcome = await self.ctx.router.run(route, call)
        results = result.get("results")
        if not isinstance(results, list) or not all(
            isinstance(r, dict) and isinstance(r.get("index"), int) for r in results
        ):
            raise ApiError(502, "The provider answered the rerank with an unexpected shape.")
        reported = (result.get("usage") or {}).get("total_tokens")
        billed = ((result.get("meta") or {}).get("billed_units") or {}).get("search_units")
        usage = (
            Usage(int(reported), 0)
            if isinstance(reported, int)
            else Usage(tokens, 0, estimated=True)
        )
        media: Json = {"documents": len(texts)}
        if isinstance(billed, int | float):
            media["search_units"] = billed
        target = self.outcome.target
        price = self.ctx.prices.price(
            target.model, target.deployment.get("pricing"), target.route.pricing
        )
        cost = price.cost(usage) if price is not None else None
        self.account(usage, self.outcome, cost=cost, media=media)
        self.answer_headers(self.outcome, cost)
        result["model"] = self.entry["model"] if self.entry else result.get("model")
        self.send_json(result)
