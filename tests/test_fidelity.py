"""What real providers refuse or send that the first fakes did not (issue 22): each case
fails on the fake that refuses what the provider refuses, until its adapter is right."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.conftest import settled
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


async def _streamed(wired: Wired, **body: Any) -> tuple[str, str | None, dict[str, Any] | None]:
    """Arguments or text, the finish reason and the usage of a streamed chat answer."""
    text, finish, usage = "", None, None
    async with wired.client() as client:
        stream = await client.chat.completions.create(
            stream=True, stream_options={"include_usage": True}, **body
        )
        async for chunk in stream:
            assert chunk.choices or chunk.usage is not None  # no empty filter chunks
            for choice in chunk.choices:
                delta = choice.delta
                text += delta.content or ""
                for call in delta.tool_calls or []:
                    text += (call.function.arguments or "") if call.function else ""
                finish = choice.finish_reason or finish
            if chunk.usage is not None:
                usage = chunk.usage.model_dump()
    return text, finish, usage


async def test_azure_streams_are_priced_and_old_api_versions_still_stream(wired: Wired) -> None:
    text, finish, usage = await _streamed(wired, model="azure-gpt", messages=HI)
    assert text == "Hello from the fake" and finish == "stop" and usage is not None
    await wired.admin.create_provider(
        name="az-old",
        type="azure",
        base_url=wired.fake.url,
        api_key=API_KEY,
        options={"api_version": "2024-06-01"},
    )
    await wired.admin.create_model(
        name="azure-old", deployments=[{"provider": "az-old", "model": "my-gpt4o-deployment"}]
    )
    text, _, _ = await _streamed(wired, model="azure-old", messages=HI)
    assert text == "Hello from the fake"
    assert "stream_options" not in wired.fake.requests[-1].body
    assert wired.gateway.ctx is not None
    await settled(wired.gateway)
    await wired.gateway.ctx.recorder.flush()
    logs = (await wired.admin.logs(model="azure-gpt"))["data"]
    assert logs[0]["cost"] is not None and not logs[0]["unpriced"]  # priced by the real model


async def test_anthropic_gets_only_what_it_takes(wired: Wired) -> None:
    async with wired.client() as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="claude",
            messages=HI,  # type: ignore[arg-type]
            temperature=1.6,
            top_p=0.9,
            seed=3,
            stop=["\n\n", "END"],
            reasoning_effort="minimal",
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "w", "schema": {"type": "object"}},
            },
        )
        answer = raw.parse()
        assert answer.choices[0].message.content == "Hello from the fake"
        sent = wired.fake.requests[-1].body
        # The Messages API's request type has no sampling parameters: left out, and named.
        assert "temperature" not in sent and "top_p" not in sent
        assert raw.headers["x-conduit-dropped-params"] == "seed,temperature,top_p"
        assert sent["stop_sequences"] == ["END"]
        assert sent["output_config"] == {
            "effort": "low",
            "format": {"type": "json_schema", "schema": {"type": "object"}},
        }
        none = await client.chat.completions.create(
            model="claude",
            messages=HI,  # type: ignore[arg-type]
            tools=[STRICT_TOOL],  # type: ignore[list-item]
            tool_choice="none",
            parallel_tool_calls=False,
        )
        assert none.choices[0].message.content == "Hello from the fake"
        # A client's own field names reach a header only when they look like parameters.
        odd = await client.chat.completions.with_raw_response.create(
            model="claude",
            messages=HI,  # type: ignore[arg-type]
            seed=1,
            extra_body={"bad\r\nname": 1, "x" * 65: 2},
        )
        assert odd.headers["x-conduit-dropped-params"] == "seed"


async def test_anthropic_stop_reasons_and_argumentless_calls(wired: Wired) -> None:
    wired.fake.then(stop_reason="model_context_window_exceeded")
    async with wired.client() as client:
        full = await client.chat.completions.create(model="claude", messages=HI)  # type: ignore[arg-type]
    assert full.choices[0].finish_reason == "length"
    wired.fake.then(no_args=True)
    arguments, finish, _ = await _streamed(
        wired, model="claude", messages=HI, tools=[STRICT_TOOL], tool_choice="required"
    )
    assert json.loads(arguments) == {} and finish == "tool_calls"


async def test_anthropic_cache_writes_cost_more_than_input(wired: Wired) -> None:
    await wired.admin.create_model(
        name="claude-priced",
        deployments=[{"provider": "ant", "model": "claude-sonnet-4-5"}],
        pricing={"input_per_mtok": 3.0, "output_per_mtok": 15.0, "cached_input_per_mtok": 0.3},
    )
    async with wired.client() as client:
        wired.fake.then(cache_write=1_000_000)
        written = await client.chat.completions.with_raw_response.create(
            model="claude-priced",
            messages=HI,  # type: ignore[arg-type]
        )
        wired.fake.then(cache_read=1_000_000)
        read = await client.chat.completions.with_raw_response.create(
            model="claude-priced",
            messages=HI,  # type: ignore[arg-type]
        )
    cost_written = float(written.headers["x-conduit-cost-usd"])
    cost_read = float(read.headers["x-conduit-cost-usd"])
    # 11 + 1M written at 1.25 x 3.00 $/M, 4 output at 15 $/M; the read at 0.30 $/M.
    assert cost_written == pytest.approx((11 * 3.0 + 1_000_000 * 3.75 + 4 * 15.0) / 1e6)
    assert cost_read == pytest.approx((11 * 3.0 + 1_000_000 * 0.3 + 4 * 15.0) / 1e6)


async def test_hour_long_cache_writes_cost_twice_input(wired: Wired) -> None:
    await wired.admin.create_model(
        name="claude-hour", deployments=[{"provider": "ant", "model": "claude-sonnet-4-5"}]
    )
    wired.fake.then(cache_write=1_000_000, cache_write_1h=1_000_000)
    async with wired.client() as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="claude-hour",
            messages=HI,  # type: ignore[arg-type]
        )
    # Bundled claude-sonnet-4-5 at 3.00 $/M in: 1M written for 5 minutes at 1.25x, 1M for
    # an hour at 2x, 11 plain input tokens, 4 output at 15 $/M.
    expected = (11 * 3.0 + 1_000_000 * 3.75 + 1_000_000 * 6.0 + 4 * 15.0) / 1e6
    assert float(raw.headers["x-conduit-cost-usd"]) == pytest.approx(expected)


async def test_audio_tokens_are_priced_at_audio_rates(wired: Wired) -> None:
    await wired.admin.create_model(
        name="voice", deployments=[{"provider": "oai", "model": "gpt-4o-audio-preview"}]
    )
    wired.fake.then(audio_tokens=(1_000, 2_000))
    async with wired.client() as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="voice",
            messages=HI,  # type: ignore[arg-type]
        )
    # Bundled gpt-4o-audio-preview: text 2.50 / 10.00 $/M, audio 40 / 80 $/M.
    expected = (11 * 2.5 + 1_000 * 40.0 + 4 * 10.0 + 2_000 * 80.0) / 1e6
    assert float(raw.headers["x-conduit-cost-usd"]) == pytest.approx(expected)
    usage = raw.parse().usage
    assert usage is not None and usage.prompt_tokens == 1_011  # audio counted in the prompt
