"""Failures that are the deployment's, not the client's, told as such: a provider whose
base_url is wrong (its path does not exist), or that does not know the deployment's model,
answers 502 naming the provider and the fix; a request whose every try failed still says
what was tried (headers, request log, access line). And the small contracts of refusals:
the 413 names its setting, rate-limit 429s carry OpenAI's x-ratelimit-* headers, and the
gateway's own headers are spelt lowercase."""

from __future__ import annotations

import logging
import re
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from conduit_tornado import AdminClient
from tests.conftest import MASTER_KEY, GatewayFactory
from tests.fakes.providers import API_KEY, FakeProviders
from tests.proxy_setup import Wired

pytestmark = pytest.mark.asyncio
HI = [{"role": "user", "content": "Say hello"}]


async def _logged(wired: Wired, request_id: str) -> dict[str, Any]:
    ctx = wired.gateway.ctx
    assert ctx is not None
    await ctx.recorder.flush()
    logs = await wired.admin.logs(limit=50)
    (entry,) = [e for e in logs["data"] if e["request_id"] == request_id]
    return entry


def _access(caplog: pytest.LogCaptureFixture, request_id: str) -> dict[str, Any]:
    (record,) = [
        r
        for r in caplog.records
        if r.name == "conduit.access" and r.__dict__["access"]["request_id"] == request_id
    ]
    fields: dict[str, Any] = record.__dict__["access"]
    return fields


def _raw_names(response: httpx2.Response) -> list[str]:
    return [name.decode() for name, _ in response.headers.raw]


async def _oneshot(wired: Wired, model: str, **extra: Any) -> httpx2.Response:
    async with httpx2.AsyncClient(base_url=wired.gateway.url, timeout=30) as http:
        return await http.post(
            "/v1/chat/completions",
            json={"model": model, "messages": HI, **extra},
            headers={"Authorization": f"Bearer {wired.key}"},
        )


async def test_openai_base_url_without_v1_is_a_gateway_error(
    wired: Wired, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="conduit.access")
    await wired.admin.create_provider(
        name="no-v1", type="openai", base_url=wired.fake.url, api_key=API_KEY
    )
    await wired.admin.create_model(name="lost", deployments=[{"provider": "no-v1", "model": "x"}])
    async with wired.client() as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(model="lost", messages=HI)  # type: ignore[arg-type]
    response = info.value.response
    assert response.status_code == 502  # not the client's 404: its model exists
    error = response.json()["error"]
    assert error["code"] == "upstream_not_found" and error["type"] == "upstream_error"
    assert "'no-v1'" in error["message"] and "base_url" in error["message"]
    assert "https://api.openai.com/v1" in error["message"]  # what the type expects
    assert API_KEY not in response.text and wired.fake.url not in response.text
    # Asking again would get the same answer: tried once, whatever max_retries says.
    assert response.headers["x-conduit-provider"] == "no-v1"
    assert response.headers["x-conduit-attempts"] == "1"
    request_id = response.headers["x-request-id"]
    entry = await _logged(wired, request_id)
    assert entry["status"] == 502 and entry["error_code"] == "upstream_not_found"
    assert (entry["provider"], entry["deployment"], entry["attempts"]) == ("no-v1", "x", 1)
    line = _access(caplog, request_id)
    assert line["error_code"] == "upstream_not_found" and line["provider"] == "no-v1"
    assert line["deployment"] == "x" and line["attempts"] == 1
    # A stream fails before its first event: the same error, as JSON.
    streamed = await _oneshot(wired, "lost", stream=True)
    assert streamed.status_code == 502 and streamed.headers["x-conduit-provider"] == "no-v1"
    assert streamed.json()["error"]["code"] == "upstream_not_found"


async def test_anthropic_base_url_with_v1_in_both_envelopes(wired: Wired) -> None:
    await wired.admin.create_provider(
        name="ant-v1", type="anthropic", base_url=wired.fake.url + "/v1", api_key=API_KEY
    )
    await wired.admin.create_model(
        name="lost-claude", deployments=[{"provider": "ant-v1", "model": "claude-sonnet-4-5"}]
    )
    async with anthropic.AsyncAnthropic(
        base_url=wired.gateway.url, api_key=wired.key, max_retries=0
    ) as claude:
        with pytest.raises(anthropic.APIStatusError) as info:
            await claude.messages.create(model="lost-claude", max_tokens=5, messages=HI)  # type: ignore[arg-type]
    response = info.value.response
    assert response.status_code == 502
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "api_error"
    message = body["error"]["message"]
    assert "'ant-v1'" in message and "has no /v1" in message and "/v1/messages" in message
    assert response.headers["x-conduit-provider"] == "ant-v1"
    # The same provider reached through chat completions: OpenAI's envelope, same words.
    chat = await _oneshot(wired, "lost-claude")
    assert chat.status_code == 502 and chat.json()["error"]["code"] == "upstream_not_found"
    assert "has no /v1" in chat.json()["error"]["message"]


async def test_unknown_upstream_model_is_a_deployment_failure_and_fails_over(
    wired: Wired,
) -> None:
    gone = {
        "status": 404,
        "body": {
            "error": {
                "message": "The model `gpt-gone` does not exist or you do not have access to it.",
                "type": "invalid_request_error",
                "param": None,
                "code": "model_not_found",
            }
        },
    }
    await wired.admin.create_model(
        name="only-gone", deployments=[{"provider": "oai", "model": "gpt-gone"}]
    )
    wired.fake.then(**gone, for_model="gpt-gone")
    alone = await _oneshot(wired, "only-gone")
    assert alone.status_code == 502
    error = alone.json()["error"]
    assert error["code"] == "upstream_model_not_found"
    assert "'oai'" in error["message"] and "'gpt-gone'" in error["message"]
    assert alone.headers["x-conduit-attempts"] == "1"  # not asked again
    # With another deployment behind it, the request is served there.
    await wired.admin.create_model(
        name="gone-then-claude",
        deployments=[
            {"provider": "oai", "model": "gpt-gone", "priority": 0},
            {"provider": "ant", "model": "claude-sonnet-4-5", "priority": 1},
        ],
    )
    wired.fake.then(**gone, for_model="gpt-gone")
    served = await _oneshot(wired, "gone-then-claude")
    assert served.status_code == 200
    assert served.headers["x-conduit-provider"] == "ant"
    assert served.headers["x-conduit-attempts"] == "2"


async def test_every_try_failed_still_says_what_was_tried(
    start_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="conduit.access")
    gw = await start_gateway(max_retries=1, retry_backoff=0.01)
    async with AdminClient(gw.url, MASTER_KEY) as admin:
        await admin.create_provider(
            name="down", type="openai", base_url="http://127.0.0.1:9/v1", api_key="sk-" + "x" * 20
        )
        await admin.create_model(name="m", deployments=[{"provider": "down", "model": "gpt-4o"}])
        key = (await admin.create_key(name="k"))["key"]
        async with openai.AsyncOpenAI(
            base_url=gw.url + "/v1", api_key=key, max_retries=0
        ) as client:
            with pytest.raises(openai.APIStatusError) as info:
                await client.chat.completions.create(model="m", messages=HI)  # type: ignore[arg-type]
            response = info.value.response
            assert response.status_code == 502
            assert response.json()["error"]["code"] == "upstream_unreachable"
            assert "'down'" in response.json()["error"]["message"]
            assert response.headers["x-conduit-provider"] == "down"
            assert response.headers["x-conduit-model"] == "gpt-4o"
            assert response.headers["x-conduit-attempts"] == "2"  # 1 + max_retries
            assert "x-conduit-provider" in _raw_names(response)  # spelt as on answers
            assert gw.ctx is not None
            await gw.ctx.recorder.flush()
            request_id = response.headers["x-request-id"]
            (entry,) = [e for e in (await admin.logs())["data"] if e["request_id"] == request_id]
    assert entry["provider"] == "down" and entry["deployment"] == "gpt-4o"
    assert entry["attempts"] == 2 and entry["error_code"] == "upstream_unreachable"
    assert entry["upstream_ms"] is not None and entry["upstream_ms"] >= 0
    line = _access(caplog, request_id)
    assert (line["provider"], line["deployment"], line["attempts"]) == ("down", "gpt-4o", 2)
    assert line["error_code"] == "upstream_unreachable"


async def test_refused_credentials_name_the_provider(
    start_gateway: GatewayFactory, fake: FakeProviders
) -> None:
    gw = await start_gateway(max_retries=0)
    async with AdminClient(gw.url, MASTER_KEY) as admin:
        await admin.create_provider(
            name="wrong-key", type="openai", base_url=fake.url + "/v1", api_key="sk-wrong-secret"
        )
        await admin.create_model(
            name="m", deployments=[{"provider": "wrong-key", "model": "gpt-4o"}]
        )
        key = (await admin.create_key(name="k"))["key"]
    async with httpx2.AsyncClient(base_url=gw.url) as http:
        r = await http.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": HI},
            headers={"Authorization": f"Bearer {key}"},
        )
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_auth_error"
    assert "'wrong-key'" in r.json()["error"]["message"] and "sk-wrong-secret" not in r.text
    assert r.headers["x-conduit-provider"] == "wrong-key"


async def test_ui_provider_test_says_the_same(wired: Wired) -> None:
    await wired.admin.create_provider(
        name="no-v1", type="openai", base_url=wired.fake.url, api_key=API_KEY
    )
    await wired.admin.create_provider(
        name="ant-v1", type="anthropic", base_url=wired.fake.url + "/v1", api_key=API_KEY
    )
    async with httpx2.AsyncClient(
        base_url=wired.gateway.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}
    ) as admin:
        oai = (await admin.post("/ui/api/providers/no-v1/test", json={"model": "gpt-4o"})).json()
        ant = (await admin.post("/ui/api/providers/ant-v1/test", json={"model": "c"})).json()
    assert oai["ok"] is False and oai["code"] == "upstream_not_found" and oai["status"] == 404
    assert "'no-v1'" in oai["message"] and "https://api.openai.com/v1" in oai["message"]
    assert ant["code"] == "upstream_not_found" and "has no /v1" in ant["message"]


async def test_request_too_large_names_its_setting(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway(max_request_bytes=2048)
    async with AdminClient(gw.url, MASTER_KEY) as admin:
        key = (await admin.create_key(name="k"))["key"]
    async with httpx2.AsyncClient(base_url=gw.url) as http:
        r = await http.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "x" * 4096}]},
            headers={"Authorization": f"Bearer {key}"},
        )
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert "CONDUIT_MAX_REQUEST_BYTES" in r.json()["error"]["message"]
    assert "2048" in r.json()["error"]["message"]


RESET = r"(\d+h)?(\d+m)?\d+s"


async def test_rate_limit_refusals_carry_openai_headers(wired: Wired) -> None:
    limited = await wired.admin.create_key(name="slow", rpm=1)
    tokens = await wired.admin.create_key(name="thrifty", tpm=10)
    async with httpx2.AsyncClient(base_url=wired.gateway.url, timeout=30) as http:

        async def chat(key: str, most: int = 5) -> httpx2.Response:
            return await http.post(
                "/v1/chat/completions",
                json={"model": "gpt", "messages": HI, "max_tokens": most},
                headers={"Authorization": f"Bearer {key}"},
            )

        first, second = await chat(limited["key"]), await chat(limited["key"])
        refused_tokens = await chat(tokens["key"], 50)  # more than a minute's tokens
    assert first.status_code == 200 and first.headers["x-ratelimit-limit-requests"] == "1"
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "rate_limit_exceeded"
    assert second.headers["x-ratelimit-limit-requests"] == "1"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    # OpenAI's duration format: a reset a whole minute away reads "1m0s".
    assert re.fullmatch(RESET, second.headers["x-ratelimit-reset-requests"])
    assert "x-ratelimit-limit-requests" in _raw_names(second)  # lowercase, as on answers
    assert refused_tokens.status_code == 429
    assert refused_tokens.json()["error"]["code"] == "tokens_rate_limit_exceeded"
    assert refused_tokens.headers["x-ratelimit-limit-tokens"] == "10"
    assert re.fullmatch(RESET, refused_tokens.headers["x-ratelimit-reset-tokens"])


async def test_dropped_params_header_is_lowercase(wired: Wired) -> None:
    r = await _oneshot(wired, "claude", seed=7)
    assert r.status_code == 200 and r.headers["x-conduit-dropped-params"] == "seed"
    assert "x-conduit-dropped-params" in _raw_names(r)
    assert "X-Conduit-Dropped-Params" not in _raw_names(r)
