"""Chat completions through every provider wire format, with the official SDK as client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx2
import openai
import pytest

from tests.fakes.providers import API_KEY, PROMPT_TOKENS
from tests.openai_schemas import validate
from tests.proxy_setup import CHAT_MODELS, MODELS, Wired

pytestmark = pytest.mark.asyncio
HI = [{"role": "user", "content": "Say hello"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.mark.parametrize("model", CHAT_MODELS)
async def test_chat_answer_in_openai_shape(wired: Wired, model: str) -> None:
    async with httpx2.AsyncClient(base_url=wired.gateway.url) as http:
        r = await http.post(
            "/v1/chat/completions",
            json={"model": model, "messages": HI},
            headers={"Authorization": f"Bearer {wired.key}"},
        )
    assert r.status_code == 200, r.text
    data = r.json()
    validate(data, "CreateChatCompletionResponse")
    assert data["model"] == model  # the virtual name, never the deployment's
    assert data["choices"][0]["message"]["content"] == "Hello from the fake"
    assert (
        data["usage"]["prompt_tokens"] == PROMPT_TOKENS and data["usage"]["completion_tokens"] == 4
    )
    assert r.headers["x-conduit-provider"] == MODELS[model][0]
    assert r.headers["x-conduit-model"] == MODELS[model][1]
    assert float(r.headers["x-conduit-cost-usd"]) >= 0
    assert float(r.headers["x-conduit-overhead-ms"]) >= 0
    assert r.headers["x-request-id"]
    assert API_KEY not in r.text


async def test_upstream_requests_are_translated_faithfully(wired: Wired) -> None:
    async with wired.client() as client:
        messages = [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                    },
                ],
            },
        ]
        for model in CHAT_MODELS:
            await client.chat.completions.create(
                model=model, messages=messages, max_tokens=50, temperature=0.2
            )
    by_path = {s.path: s for s in wired.fake.requests}
    oai = by_path["/v1/chat/completions"]
    assert oai.body["messages"] == messages and oai.body["model"] == "gpt-4o"  # passed through
    azure = by_path["/openai/deployments/my-gpt4o-deployment/chat/completions"]
    assert azure.query["api-version"] == "2024-10-21" and azure.headers["api-key"] == API_KEY
    assert "authorization" not in azure.headers
    ant = by_path["/v1/messages"].body
    assert ant["system"] == "Be brief." and ant["max_tokens"] == 50
    assert "temperature" not in ant  # the Messages API has no sampling parameters
    assert ant["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                },
            ],
        }
    ]
    gem = by_path["/v1beta/models/gemini-2.5-flash:generateContent"].body
    assert gem["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert gem["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "What is this?"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
            ],
        }
    ]
    assert gem["generationConfig"] == {"temperature": 0.2, "maxOutputTokens": 50}


async def test_unknown_fields_pass_through_unchanged(wired: Wired) -> None:
    extra = {
        "seed": 7,
        "logprobs": True,
        "top_logprobs": 2,
        "reasoning_effort": "low",
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object"}},
        },
        "parallel_tool_calls": False,
        "metadata": {"a": "b"},
        "store": False,
    }
    async with httpx2.AsyncClient(base_url=wired.gateway.url) as http:
        r = await http.post(
            "/v1/chat/completions",
            json={"model": "gpt", "messages": HI, **extra},
            headers={"Authorization": f"Bearer {wired.key}"},
        )
        assert r.status_code == 200
        assert "x-conduit-dropped-params" not in r.headers
        sent = wired.fake.requests[-1].body
        for name, value in extra.items():
            assert sent[name] == value
        # A field the gateway does not know still goes to OpenAI as sent (it may be newer
        # than us): OpenAI's own refusal of it comes back, naming the field.
        r = await http.post(
            "/v1/chat/completions",
            json={"model": "gpt", "messages": HI, "some_future_field": {"nested": [1, 2]}},
            headers={"Authorization": f"Bearer {wired.key}"},
        )
    assert wired.fake.requests[-1].body["some_future_field"] == {"nested": [1, 2]}
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "some_future_field"


@pytest.mark.parametrize("model", CHAT_MODELS)
@pytest.mark.parametrize("include_usage", [False, True])
async def test_streaming(wired: Wired, model: str, include_usage: bool) -> None:
    body = {"model": model, "messages": HI, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    async with wired.stream(body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-conduit-provider"] == MODELS[model][0]
        raw = [line async for line in r.aiter_lines() if line.startswith("data: ")]
    assert raw[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in raw[:-1]]
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
        assert chunk["model"] == model
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello from the fake"
    finishes = [
        c["choices"][0]["finish_reason"]
        for c in chunks
        if c["choices"] and c["choices"][0]["finish_reason"]
    ]
    assert finishes == ["stop"]
    usage_chunks = [c for c in chunks if c.get("usage")]
    if include_usage:
        assert len(usage_chunks) == 1 and usage_chunks[0]["choices"] == []
        assert usage_chunks[0]["usage"]["prompt_tokens"] == PROMPT_TOKENS
        assert all("usage" in c for c in chunks)  # null on the others, as OpenAI sends
    else:
        assert usage_chunks == [] and all("usage" not in c for c in chunks)
    if model in ("gpt", "azure-gpt"):  # usage is always asked of upstream, to bill exactly
        assert wired.fake.requests[-1].body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("model", CHAT_MODELS)
async def test_a_streamed_event_is_forwarded_before_the_next_exists(
    wired: Wired, model: str
) -> None:
    """No buffering: the provider sends one event and then waits for the test, which
    waits for that event to reach the client through the gateway."""
    wired.fake.release.clear()
    wired.fake.then(hold_after_first=True)
    body = {"model": model, "messages": HI, "stream": True}
    async with wired.stream(body) as r:
        lines = r.aiter_lines()
        first = await asyncio.wait_for(_next_data(lines), 5)
        assert json.loads(first)["object"] == "chat.completion.chunk"
        wired.fake.release.set()
        rest = [line async for line in lines if line.startswith("data: ")]
    assert rest[-1] == "data: [DONE]"


async def _next_data(lines: AsyncIterator[str]) -> str:
    async for line in lines:
        if line.startswith("data: "):
            return line[6:]
    raise AssertionError("the stream ended without an event")


@pytest.mark.parametrize("model", CHAT_MODELS)
async def test_tool_calls_plain_and_streamed(wired: Wired, model: str) -> None:
    async with wired.client() as client:
        answer = await client.chat.completions.create(
            model=model,
            messages=HI,
            tools=[WEATHER_TOOL],
            tool_choice="required",  # type: ignore[list-item]
        )
        call = answer.choices[0].message.tool_calls[0]  # type: ignore[index]
        assert answer.choices[0].finish_reason == "tool_calls"
        assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {
            "city": "Paris"
        }  # type: ignore[union-attr]

        args = ""
        names = []
        finish = None
        stream = await client.chat.completions.create(
            model=model,
            messages=HI,
            tools=[WEATHER_TOOL],
            tool_choice="required",
            stream=True,  # type: ignore[list-item]
        )
        async for chunk in stream:
            validate(
                chunk.model_dump(mode="json", exclude_unset=True),
                "CreateChatCompletionStreamResponse",
            )
            for choice in chunk.choices:
                for delta in choice.delta.tool_calls or []:
                    if delta.function and delta.function.name:
                        names.append(delta.function.name)
                    args += (delta.function.arguments or "") if delta.function else ""
                finish = choice.finish_reason or finish
        assert (
            names == ["get_weather"]
            and json.loads(args) == {"city": "Paris"}
            and finish == "tool_calls"
        )

    # A tool result goes back in each provider's own form.
    async with wired.client() as client:
        await client.chat.completions.create(
            model=model,
            messages=[
                *HI,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
            ],
            tools=[WEATHER_TOOL],
        )  # type: ignore[list-item]
    sent = wired.fake.requests[-1].body
    if model == "claude":
        assert sent["messages"][1]["content"][0] == {
            "type": "tool_use",
            "id": "call_1",
            "name": "get_weather",
            "input": {"city": "Paris"},
        }
        assert sent["messages"][2]["content"][0] == {
            "type": "tool_result",
            "tool_use_id": "call_1",
            "content": '{"temp": 21}',
        }
        assert sent["tools"][0]["input_schema"]["required"] == ["city"]
    elif model == "gem":
        assert sent["contents"][1]["parts"][0] == {
            "functionCall": {"name": "get_weather", "args": {"city": "Paris"}}
        }
        assert sent["contents"][2]["parts"][0] == {
            "functionResponse": {"name": "get_weather", "response": {"content": {"temp": 21}}}
        }
    else:
        assert sent["messages"][2] == {
            "role": "tool",
            "tool_call_id": "call_1",
            "content": '{"temp": 21}',
        }


async def test_n_passes_through_or_fans_out(wired: Wired) -> None:
    async with wired.client() as client:
        native = await client.chat.completions.create(model="gpt", messages=HI, n=3)
        assert [c.index for c in native.choices] == [0, 1, 2]
        assert wired.fake.requests[-1].body["n"] == 3
        before = len(wired.fake.requests)
        fanned = await client.chat.completions.create(model="claude", messages=HI, n=3)
        assert len(wired.fake.requests) - before == 3  # Anthropic has no n: three calls
        assert [c.index for c in fanned.choices] == [0, 1, 2]
        assert fanned.usage is not None and fanned.usage.prompt_tokens == 3 * PROMPT_TOKENS
        assert fanned.usage.completion_tokens == 12

        stream = await client.chat.completions.create(
            model="claude", messages=HI, n=2, stream=True, stream_options={"include_usage": True}
        )
        texts = {0: "", 1: ""}
        usage = None
        async for chunk in stream:
            for choice in chunk.choices:
                texts[choice.index] += choice.delta.content or ""
            usage = chunk.usage or usage
        assert texts == {0: "Hello from the fake", 1: "Hello from the fake"}
        assert usage is not None and usage.prompt_tokens == 2 * PROMPT_TOKENS


async def test_mock_provider_is_deterministic_and_free(wired: Wired) -> None:
    async with wired.client() as client:
        a = await client.chat.completions.create(model="mock", messages=HI)
        b = await client.chat.completions.create(model="mock", messages=HI)
        assert (
            a.choices[0].message.content == b.choices[0].message.content == "Mock reply: Say hello"
        )
        raw = await client.chat.completions.with_raw_response.create(model="mock", messages=HI)
        assert raw.headers["x-conduit-cost-usd"] == "0"
        words = []
        async for chunk in await client.chat.completions.create(
            model="mock", messages=HI, stream=True
        ):
            words.extend(c.delta.content or "" for c in chunk.choices)
        assert "".join(words) == "Mock reply: Say hello"


async def test_request_validation(wired: Wired) -> None:
    async with httpx2.AsyncClient(
        base_url=wired.gateway.url, headers={"Authorization": f"Bearer {wired.key}"}
    ) as http:
        cases = [
            ({"messages": HI}, 400, "model"),
            ({"model": "gpt"}, 400, "messages"),
            ({"model": "gpt", "messages": []}, 400, "messages"),
            ({"model": "gpt", "messages": ["hi"]}, 400, "messages"),
            ({"model": "gpt", "messages": HI, "n": 0}, 400, "n"),
            ({"model": "nope", "messages": HI}, 404, "model"),
        ]
        for body, status, param in cases:
            r = await http.post("/v1/chat/completions", json=body)
            assert r.status_code == status, (body, r.text)
            assert r.json()["error"]["param"] == param
    assert wired.fake.requests == []  # nothing invalid reached a provider
    restricted = (await wired.admin.create_key(name="r", allowed_models=["claude"]))["key"]
    async with openai.AsyncOpenAI(
        base_url=wired.gateway.url + "/v1", api_key=restricted, max_retries=0
    ) as client:
        with pytest.raises(openai.PermissionDeniedError) as info:
            await client.chat.completions.create(model="gpt", messages=HI)
        assert info.value.code == "model_not_allowed"
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="missing", messages=HI)


async def test_a_stream_with_no_events_is_a_failure_not_an_empty_answer(wired: Wired) -> None:
    # A 200 whose body is no event stream (a JSON error, a proxy's page) was relayed as
    # an empty answer, billed, and never retried.
    wired.fake.then(status=200, body={"error": {"message": "not a stream"}}, for_model="gpt-4o")
    wired.fake.then(status=200, body={"error": {"message": "not a stream"}}, for_model="gpt-4o")
    wired.fake.then(status=200, body={"error": {"message": "not a stream"}}, for_model="gpt-4o")
    before = len(wired.fake.requests)
    async with wired.stream({"model": "gpt", "messages": HI, "stream": True}) as r:
        body = await r.aread()
    assert r.status_code == 502, body
    assert json.loads(body)["error"]["code"] == "upstream_error"
    assert len(wired.fake.requests) - before == 3  # asked again, within the request's budget


async def test_stream_must_be_a_boolean_and_stream_options_need_a_stream(wired: Wired) -> None:
    # Read by truthiness, "false" streamed; OpenAI refuses it, and stream_options without
    # a stream, as these 400s.
    async with httpx2.AsyncClient(
        base_url=wired.gateway.url, headers={"Authorization": f"Bearer {wired.key}"}
    ) as http:
        for path, body in (
            ("/v1/chat/completions", {"messages": HI}),
            ("/v1/completions", {"prompt": "Say hello"}),
        ):
            for model in ("gpt", "claude", "mock"):
                cases: list[tuple[dict[str, object], str]] = [
                    ({"stream": "false"}, "stream"),
                    ({"stream": "yes"}, "stream"),
                    ({"stream": 0}, "stream"),
                    ({"stream_options": {"include_usage": True}}, "stream_options"),
                    ({"stream": False, "stream_options": {}}, "stream_options"),
                ]
                for extra, param in cases:
                    r = await http.post(path, json={**body, "model": model, **extra})
                    assert r.status_code == 400, (path, extra, r.text)
                    error = r.json()["error"]
                    assert error["param"] == param and error["type"] == "invalid_request_error"
                    assert param in error["message"], error
    assert wired.fake.requests == []
    async with wired.client() as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(
                model="gpt", messages=HI, stream_options={"include_usage": True}
            )
        assert refused.value.param == "stream_options"
        # Explicit false and null are what OpenAI takes.
        answer = await client.chat.completions.create(
            model="gpt", messages=HI, stream=False, stream_options=None
        )
        assert answer.choices[0].message.content == "Hello from the fake"
        text = await client.completions.create(model="gpt", prompt="Say hello", stream=False)
        assert text.choices[0].text
