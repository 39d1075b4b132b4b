"""Bounded work per request: what one request may cost the gateway and its providers.

Found by probes: a huge embedding size froze the event loop, and one legacy completion
fanned out (prompts x n x retries) into 1,500 upstream calls. Where a probe used to hang
the gateway, the client's timeout below is a liveness bound (minutes before the fix,
milliseconds after), not a performance measurement.
"""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from tests.proxy_setup import Wired, WiredFactory

pytestmark = pytest.mark.asyncio

LIVENESS = 60.0  # seconds; the frozen gateway never answered


async def post(wired: Wired, path: str, body: dict[str, Any]) -> httpx2.Response:
    async with httpx2.AsyncClient(base_url=wired.gateway.url, timeout=LIVENESS) as http:
        return await http.post(path, json=body, headers={"Authorization": f"Bearer {wired.key}"})


def refused(r: httpx2.Response, param: str) -> dict[str, Any]:
    assert r.status_code == 400, r.text
    error: dict[str, Any] = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    return error


async def test_embedding_dimensions_are_capped(wired: Wired) -> None:
    r = await post(wired, "/v1/embeddings", {"model": "mock", "input": "x", "dimensions": 10**9})
    error = refused(r, "dimensions")
    assert "4096" in error["message"]
    # The gateway is still serving, and sizes within the cap work on the mock.
    r = await post(wired, "/v1/embeddings", {"model": "mock", "input": "x", "dimensions": 4096})
    assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 4096
    assert wired.fake.requests == []


async def test_mock_embeddings_are_deterministic_and_bounded(wired: Wired) -> None:
    first = await post(wired, "/v1/embeddings", {"model": "mock", "input": ["a", "b"]})
    again = await post(wired, "/v1/embeddings", {"model": "mock", "input": ["a", "b"]})
    vectors = [d["embedding"] for d in first.json()["data"]]
    assert vectors == [d["embedding"] for d in again.json()["data"]]
    assert vectors[0] != vectors[1] and len(vectors[0]) == 8  # the mock's default size
    # inputs x dimensions beyond what the mock returns: a 400, not minutes of hashing
    r = await post(
        wired, "/v1/embeddings", {"model": "mock", "input": ["x"] * 2048, "dimensions": 4096}
    )
    refused(r, "dimensions")


async def test_embedding_inputs_are_capped(wired_with: WiredFactory) -> None:
    wired = await wired_with(max_embedding_inputs=3)
    r = await post(wired, "/v1/embeddings", {"model": "emb", "input": ["a", "b", "c", "d"]})
    assert "at most 3" in refused(r, "input")["message"]
    ok = await post(wired, "/v1/embeddings", {"model": "emb", "input": ["a", "b", "c"]})
    assert ok.status_code == 200
    # One array of token ids is one input, however long.
    tokens = await post(wired, "/v1/embeddings", {"model": "emb", "input": [1, 2, 3, 4, 5]})
    assert tokens.status_code == 200
    assert len(wired.fake.requests) == 2


async def test_fanout_is_capped_before_any_upstream_call(wired_with: WiredFactory) -> None:
    wired = await wired_with(max_fanout=8, retry_backoff=0.01)
    # Anthropic has no n: prompts x n separate calls, refused past max_fanout.
    r = await post(wired, "/v1/completions", {"model": "claude", "prompt": ["a"] * 50, "n": 10})
    refused(r, "n")
    r = await post(wired, "/v1/completions", {"model": "claude", "prompt": ["a"] * 9})
    assert "at most 8" in refused(r, "prompt")["message"]
    r = await post(wired, "/v1/completions", {"model": "claude", "prompt": ["a"] * 4, "n": 3})
    refused(r, "prompt")
    r = await post(
        wired,
        "/v1/chat/completions",
        {"model": "mock", "messages": [{"role": "user", "content": "x"}], "n": 9},
    )
    refused(r, "n")
    assert wired.fake.requests == []
    # Within the cap it works; providers with n (and native completions) make one call.
    r = await post(wired, "/v1/completions", {"model": "claude", "prompt": ["a", "b"], "n": 4})
    assert r.status_code == 200 and len(r.json()["choices"]) == 8
    assert len(wired.fake.requests) == 8
    r = await post(wired, "/v1/completions", {"model": "gpt", "prompt": ["a"] * 50, "n": 10})
    assert r.status_code == 200 and len(wired.fake.requests) == 9


async def test_retries_are_counted_per_request(wired_with: WiredFactory) -> None:
    wired = await wired_with(max_fanout=16, max_retries=2, retry_backoff=0.01)
    for _ in range(100):  # answered late, so every call of a try is sent before one fails
        wired.fake.then(status=503, delay=1.0)
    # 4 prompts x n=4 on a provider without n: 16 calls per try. A second try would need
    # 16 more, beyond the request's budget of max(16 x 1 target, 16 + 2 retries) = 18.
    r = await post(wired, "/v1/completions", {"model": "claude", "prompt": ["a"] * 4, "n": 4})
    assert r.status_code == 502
    assert len(wired.fake.requests) == 16  # was 48: every try re-sent the whole fan-out
    # One call per try: the usual retries (1 + max_retries tries).
    wired.fake.requests.clear()
    r = await post(wired, "/v1/completions", {"model": "claude", "prompt": "a"})
    assert r.status_code == 502 and len(wired.fake.requests) == 3


async def test_refused_credentials_are_not_retried_on_the_same_deployment(
    wired: Wired,
) -> None:
    wired.fake.then(status=401, body={"error": {"message": "bad key"}})
    wired.fake.then(status=401, body={"error": {"message": "bad key"}})
    r = await post(
        wired,
        "/v1/chat/completions",
        {"model": "gpt", "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_auth_error"
    assert len(wired.fake.requests) == 1  # was 3: the same key, refused again and again
    # Another deployment is still tried: the model falls over to Azure.
    wired.fake.requests.clear()
    wired.fake.script.clear()
    await wired.admin.create_model(
        name="two",
        deployments=[
            {"provider": "oai", "model": "gpt-4o", "priority": 0},
            {"provider": "az", "model": "my-gpt4o-deployment", "priority": 1},
        ],
    )
    wired.fake.then(status=403, for_model="gpt-4o")
    r = await post(
        wired,
        "/v1/chat/completions",
        {"model": "two", "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 200, r.text
    assert [s.path for s in wired.fake.requests] == [
        "/v1/chat/completions",
        "/openai/deployments/my-gpt4o-deployment/chat/completions",
    ]
