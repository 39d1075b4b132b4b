"""Moderations and rerank through the gateway, with the official SDK where it has them."""

from __future__ import annotations

import httpx2
import openai
import pytest

from tests.conftest import settled
from tests.openai_schemas import validate
from tests.proxy_setup import Wired

pytestmark = pytest.mark.asyncio


async def test_moderation_relayed_free_and_logged(wired: Wired) -> None:
    await wired.admin.create_model(
        name="omni-moderation-latest",
        deployments=[{"provider": "oai", "model": "omni-moderation-latest"}],
    )
    async with wired.client() as client:
        raw = await client.moderations.with_raw_response.create(
            input=["a calm day", "plan an attack"]
        )
        answer = raw.parse()
    assert [r.flagged for r in answer.results] == [False, True]
    assert answer.model == "omni-moderation-latest"
    assert raw.headers["x-conduit-cost-usd"] == "0"
    assert wired.fake.requests[-1].path == "/v1/moderations"
    validate(raw.http_response.json(), "CreateModerationResponse")
    await settled(wired.gateway)
    assert wired.gateway.ctx is not None
    await wired.gateway.ctx.recorder.flush()
    entry = (await wired.admin.logs())["data"][0]
    assert entry["endpoint"] == "moderations" and entry["cost"] == 0.0


async def test_rerank_in_the_shared_shape(wired: Wired) -> None:
    await wired.admin.create_model(
        name="reranker", deployments=[{"provider": "oai", "model": "jina-reranker-v2"}]
    )
    async with httpx2.AsyncClient(base_url=wired.gateway.url) as http:
        r = await http.post(
            "/v1/rerank",
            json={
                "model": "reranker",
                "query": "red fox",
                "documents": ["a blue whale", {"text": "the red fox runs"}, "a red car"],
                "top_n": 2,
            },
            headers={"Authorization": f"Bearer {wired.key}"},
        )
        assert r.status_code == 200, r.text
        data = r.json()
        assert [x["index"] for x in data["results"]] == [1, 2]
        assert data["model"] == "reranker"
        assert wired.fake.requests[-1].body["model"] == "jina-reranker-v2"
        bad = await http.post(
            "/v1/rerank",
            json={"model": "reranker", "query": "x", "documents": []},
            headers={"Authorization": f"Bearer {wired.key}"},
        )
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "documents"
        chat_only = await http.post(
            "/v1/rerank",
            json={"model": "claude", "query": "x", "documents": ["y"]},
            headers={"Authorization": f"Bearer {wired.key}"},
        )
        assert chat_only.status_code == 400 and chat_only.json()["error"]["param"] == "model"
    await settled(wired.gateway)
    assert wired.gateway.ctx is not None
    await wired.gateway.ctx.recorder.flush()
    entry = next(e for e in (await wired.admin.logs())["data"] if e["status"] == 200)
    assert entry["endpoint"] == "rerank" and entry["media"]["search_units"] == 1


async def test_models_list_what_their_upstream_models_can_do(wired: Wired) -> None:
    await wired.admin.create_model(
        name="reranker", deployments=[{"provider": "oai", "model": "jina-reranker-v2"}]
    )
    await wired.admin.create_model(  # two deployments: what either can do
        name="both",
        deployments=[
            {"provider": "oai", "model": "gpt-4o-2024-08-06"},
            {"provider": "oai", "model": "text-embedding-3-large"},
        ],
    )
    await wired.admin.create_model(  # an embedding model a provider cannot serve: nothing
        name="odd", deployments=[{"provider": "ant", "model": "text-embedding-3-small"}]
    )
    async with httpx2.AsyncClient(
        base_url=wired.gateway.url, headers={"Authorization": f"Bearer {wired.key}"}
    ) as http:
        listed = {m["id"]: m["capabilities"] for m in (await http.get("/v1/models")).json()["data"]}
        one = (await http.get("/v1/models/emb")).json()
    chat = ["chat", "completions", "responses"]
    assert listed["gpt"] == chat  # gpt-4o: not embeddings, images, audio, realtime, rerank
    assert listed["claude"] == chat and listed["gem"] == chat
    assert listed["emb"] == ["embeddings"] and one["capabilities"] == ["embeddings"]
    assert listed["gem-emb"] == ["embeddings"]
    assert listed["dalle"] == ["images"] and listed["azure-dalle"] == ["images"]
    assert listed["whisper"] == ["audio"] and listed["tts"] == ["audio"]
    assert listed["reranker"] == ["rerank"]
    assert listed["both"] == ["chat", "completions", "embeddings", "responses"]
    assert listed["odd"] == []
    # Names the tables and words do not know: the provider type's capabilities.
    assert "embeddings" in listed["azure-gpt"] and "images" in listed["azure-gpt"]
    assert "realtime" in listed["mock"]


async def test_models_list_what_they_can_do_and_declared_limits_hold(wired: Wired) -> None:
    await wired.admin.create_model(
        name="chat-only",
        deployments=[{"provider": "oai", "model": "gpt-4o"}],
        capabilities=["chat", "responses"],
    )
    async with wired.client() as client:
        listed = {m.id: m for m in (await client.models.list()).data}
        assert listed["chat-only"].capabilities == ["chat", "responses"]  # type: ignore[attr-defined]
        assert listed["gpt"].capabilities == ["chat", "completions", "responses"]  # type: ignore[attr-defined]
        assert "embeddings" not in listed["claude"].capabilities  # type: ignore[attr-defined]
        assert (
            await client.chat.completions.create(
                model="chat-only", messages=[{"role": "user", "content": "hi"}]
            )
        ).choices
        before = len(wired.fake.requests)
        with pytest.raises(openai.BadRequestError) as refused:
            await client.embeddings.create(model="chat-only", input="x")
    assert refused.value.body["param"] == "model"  # type: ignore[index]
    assert "chat-only" in refused.value.body["message"]  # type: ignore[index]
    assert len(wired.fake.requests) == before
