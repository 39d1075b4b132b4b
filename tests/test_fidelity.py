"""What real providers refuse or send that the first fakes did not (issue 22): each case
fails on the fake that refuses what the provider refuses, until its adapter is right."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.fakes.providers import API_KEY
from tests.proxy_setup import Wired

pytestmark = pytest.mark.asyncio
HI = [{"role": "user", "content": "Weather in Paris?"}]
STRICT_TOOL: dict[str, Any] = {  # what Pydantic, MCP and strict OpenAI tools send
    "type": "function",
    "function": {
        "name": "get_weather",
        "strict": True,
        "parameters": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "city": {"$ref": "#/$defs/City"},
                "unit": {"type": ["string", "null"], "enum": ["C", "F", None]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
            "$defs": {"City": {"type": "string"}},
        },
    },
}


async def test_gemini_takes_full_json_schema_tools(wired: Wired) -> None:
    async with wired.client() as client:
        answer = await client.chat.completions.create(
            model="gem",
            messages=HI,  # type: ignore[arg-type]
            tools=[STRICT_TOOL],  # type: ignore[list-item]
            tool_choice="required",
        )
    assert answer.choices[0].finish_reason == "tool_calls"
    sent = wired.fake.requests[-1].body["tools"][0]["functionDeclarations"][0]
    assert "parameters" not in sent
    assert sent["parametersJsonSchema"] == STRICT_TOOL["function"]["parameters"]


async def test_gemini_3_tool_loop_keeps_the_thought_signature(wired: Wired) -> None:
    await wired.admin.create_model(
        name="gem3", deployments=[{"provider": "gem", "model": "gemini-3-pro-preview"}]
    )
    async with wired.client() as client:
        asked = await client.chat.completions.create(
            model="gem3",
            messages=HI,  # type: ignore[arg-type]
            tools=[STRICT_TOOL],  # type: ignore[list-item]
            tool_choice="required",
        )
        message = asked.choices[0].message
        call = message.tool_calls[0]  # type: ignore[index]
        # Sent back as most agent code does: the SDK's message, as it came.
        answered = await client.chat.completions.create(
            model="gem3",
            messages=[
                *HI,
                message.model_dump(exclude_none=True),  # type: ignore[list-item]
                {"role": "tool", "tool_call_id": call.id, "content": "21 C"},
            ],
            tools=[STRICT_TOOL],  # type: ignore[list-item]
        )
    assert answered.choices[0].message.content == "Hello from the fake"
    history = wired.fake.requests[-1].body["contents"]
    model_turn = next(c for c in history if c["role"] == "model")
    assert model_turn["parts"][0]["thoughtSignature"] == "c2lnbmF0dXJlLWZyb20tZ2VtaW5pLTM="


async def test_a_bad_gemini_key_is_the_gateways_problem_and_fails_over(wired: Wired) -> None:
    await wired.admin.create_provider(
        name="gem-bad", type="gemini", base_url=wired.fake.url, api_key="not-the-key"
    )
    await wired.admin.create_model(
        name="gem-bad-only", deployments=[{"provider": "gem-bad", "model": "gemini-2.5-flash"}]
    )
    await wired.admin.create_model(
        name="gem-then-gpt",
        deployments=[
            {"provider": "gem-bad", "model": "gemini-2.5-flash", "priority": 0},
            {"provider": "oai", "model": "gpt-4o", "priority": 1},
        ],
    )
    async with wired.client() as client:
        with pytest.raises(openai.APIStatusError) as refused:
            await client.chat.completions.create(model="gem-bad-only", messages=HI)  # type: ignore[arg-type]
        assert refused.value.status_code == 502
        assert refused.value.body["code"] == "upstream_auth_error"  # type: ignore[index]
        raw = await client.chat.completions.with_raw_response.create(
            model="gem-then-gpt",
            messages=HI,  # type: ignore[arg-type]
        )
    assert raw.headers["x-conduit-provider"] == "oai"


async def test_gemini_requests_it_would_refuse_are_adapted(wired: Wired) -> None:
    async with wired.client() as client:
        penalised = await client.chat.completions.create(
            model="gem",
            messages=HI,  # type: ignore[arg-type]
            presence_penalty=0,
            frequency_penalty=0.5,
        )
        assert penalised.choices[0].message.content == "Hello from the fake"
        json_with_tools = await client.chat.completions.create(
            model="gem",
            messages=HI,  # type: ignore[arg-type]
            tools=[STRICT_TOOL],  # type: ignore[list-item]
            response_format={"type": "json_object"},
        )
        assert json_with_tools.choices
        picture = await client.chat.completions.create(
            model="gem",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": "https://x.test/cat.png?v=2"}},
                    ],
                }
            ],
        )
        assert picture.choices
    part = wired.fake.requests[-1].body["contents"][0]["parts"][1]
    assert part["fileData"]["mimeType"] == "image/png"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_blocked_gemini_prompt_is_a_content_filter_error(
    wired: Wired, stream: bool
) -> None:
    wired.fake.then(blocked=True)
    async with wired.client() as client:
        with pytest.raises(openai.BadRequestError) as refused:
            # Streamed or not, a prompt refused before any answer is the same 400.
            await client.chat.completions.create(model="gem", messages=HI, stream=stream)  # type: ignore[call-overload]
    assert refused.value.body["code"] == "content_filter"  # type: ignore[index]
    assert "SAFETY" in refused.value.body["message"]  # type: ignore[index]


async def test_openai_error_code_and_param_reach_the_client(wired: Wired) -> None:
    wired.fake.then(
        status=400,
        body={
            "error": {
                "message": "This model's maximum context length is 128000 tokens.",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        },
    )
    async with wired.client() as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(model="gpt", messages=HI)  # type: ignore[arg-type]
    body: dict[str, Any] = refused.value.body  # type: ignore[assignment]
    assert body["code"] == "context_length_exceeded" and body["param"] == "messages"
    assert API_KEY not in json.dumps(body)
