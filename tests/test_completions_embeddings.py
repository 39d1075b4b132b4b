"""Legacy completions (native and translated) and embeddings (float and base64)."""

from __future__ import annotations

import base64
import json
import struct

import httpx2
import openai
import pytest

from tests.fakes.providers import PROMPT_TOKENS
from tests.openai_schemas import validate
from tests.proxy_setup import Wired

pytestmark = pytest.mark.asyncio


async def test_native_completions(wired: Wired) -> None:
    async with wired.client() as client:
        raw = await client.completions.with_raw_response.create(
            model="gpt", prompt="Once", max_tokens=5
        )
        answer = raw.parse()
        assert answer.model == "gpt" and answer.choices[0].text == "Hello from the fake"
        assert "x-conduit-translated" not in raw.headers
        validate(json.loads(raw.content), "CreateCompletionResponse")
        assert wired.fake.requests[-1].path == "/v1/completions"
        text = ""
        async for chunk in await client.completions.create(model="gpt", prompt="Once", stream=True):
            text += "".join(c.text for c in chunk.choices)
        assert text == "Hello from the fake"


@pytest.mark.parametrize("model", ["claude", "gem", "mock"])
async def test_completions_translated_for_chat_only_providers(wired: Wired, model: str) -> None:
    async with wired.client() as client:
        raw = await client.completions.with_raw_response.create(
            model=model, prompt="Say hello", max_tokens=5
        )
        assert raw.headers["x-conduit-translated"] == "chat.completions"  # stated, not silent
        body = json.loads(raw.content)
        validate(body, "CreateCompletionResponse")
        assert body["object"] == "text_completion" and body["model"] == model
        assert body["choices"][0]["text"]
        stream = await client.completions.create(model=model, prompt="Say hello", stream=True)
        text = ""
        async for chunk in stream:
            assert chunk.object == "text_completion"
            text += "".join(c.text for c in chunk.choices)
        assert text == body["choices"][0]["text"]
        two = await client.completions.create(model=model, prompt=["a", "b"], n=2)
        assert sorted(c.index for c in two.choices) == [0, 1, 2, 3]
    if model == "claude":
        assert wired.fake.requests[0].body["messages"] == [
            {"role": "user", "content": [{"type": "text", "text": "Say hello"}]}
        ]


async def test_token_prompts_on_chat_only_providers_are_refused(wired: Wired) -> None:
    async with httpx2.AsyncClient(base_url=wired.gateway.url) as http:
        r = await http.post(
            "/v1/completions",
            json={"model": "claude", "prompt": [1, 2, 3]},
            headers={"Authorization": f"Bearer {wired.key}"},
        )
    assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_for_model"


def _floats(b64: str) -> list[float]:
    raw = base64.b64decode(b64)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


async def test_embeddings_float_and_base64(wired: Wired) -> None:
    async with wired.client() as client:
        floats = await client.embeddings.create(
            model="emb", input=["a", "b"], encoding_format="float"
        )
        assert [d.index for d in floats.data] == [0, 1]
        assert floats.data[0].embedding == [0.5, -0.25, 0.125, 1.0]
        assert floats.model == "emb" and floats.usage.prompt_tokens == 6
        default = await client.embeddings.create(model="emb", input="a")  # the SDK asks for base64
        assert default.data[0].embedding == [0.5, -0.25, 0.125, 1.0]
        assert wired.fake.requests[-1].body["encoding_format"] == "base64"
        dims = await client.embeddings.create(
            model="emb", input="a", dimensions=2, encoding_format="float"
        )
        assert len(dims.data[0].embedding) == 2 and wired.fake.requests[-1].body["dimensions"] == 2
        tokens = await client.embeddings.create(
            model="emb", input=[[1, 2, 3]], encoding_format="float"
        )
        assert len(tokens.data) == 1

        # Providers that answer floats: the gateway encodes base64 itself.
        gem = await client.embeddings.create(model="gem-emb", input=["x", "y"])
        assert [round(v, 5) for v in gem.data[1].embedding] == [0.1, 0.2, 0.3]
        mock = await client.embeddings.create(model="mock", input="x", dimensions=5)
        assert len(mock.data[0].embedding) == 5
    async with httpx2.AsyncClient(
        base_url=wired.gateway.url, headers={"Authorization": f"Bearer {wired.key}"}
    ) as http:
        r = await http.post(
            "/v1/embeddings", json={"model": "gem-emb", "input": "x", "encoding_format": "base64"}
        )
        body = r.json()
        assert [round(v, 5) for v in _floats(body["data"][0]["embedding"])] == [0.1, 0.2, 0.3]
        assert "_conduit" not in r.text  # the adapter's estimate marker stays internal
        ctx = wired.gateway.ctx
        assert ctx is not None
        await ctx.recorder.flush()
        logged = await ctx.store.find("request_logs", {"model": "gem-emb"})
        assert logged and all(entry["estimated"] for entry in logged)  # Gemini reports no counts
        r = await http.post(
            "/v1/embeddings", json={"model": "emb", "input": "x", "encoding_format": "float"}
        )
        validate(r.json(), "CreateEmbeddingResponse")
        for bad in (
            {"model": "emb"},
            {"model": "emb", "input": ""},
            {"model": "emb", "input": []},
            {"model": "emb", "input": [1, "a"]},
            {"model": "emb", "input": "x", "encoding_format": "hex"},
            {"model": "emb", "input": "x", "dimensions": 0},
        ):
            r = await http.post("/v1/embeddings", json=bad)
            assert r.status_code == 400, bad
        r = await http.post("/v1/embeddings", json={"model": "claude", "input": "x"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_for_model"


async def test_prompt_tokens_reported_for_legacy_completions(wired: Wired) -> None:
    async with openai.AsyncOpenAI(
        base_url=wired.gateway.url + "/v1", api_key=wired.key, max_retries=0
    ) as client:
        answer = await client.completions.create(model="gpt", prompt="x")
    assert answer.usage is not None and answer.usage.prompt_tokens == PROMPT_TOKENS
