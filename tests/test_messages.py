"""Anthropic's Messages API in front of every provider, with the official anthropic SDK."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import pytest

from tests.conftest import settled
from tests.fakes.providers import PROMPT_TOKENS
from tests.proxy_setup import CHAT_MODELS, MODELS, Wired

pytestmark = pytest.mark.asyncio
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def client(wired: Wired, key: str | None = None) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=wired.gateway.url, api_key=key or wired.key, max_retries=0
    )


@pytest.mark.parametrize("model", [*CHAT_MODELS, "mock"])
async def test_message_in_anthropic_shape(wired: Wired, model: str) -> None:
    async with client(wired) as c:
        raw = await c.messages.with_raw_response.create(
            model=model,
            max_tokens=100,
            system="Be brief.",
            messages=[{"role": "user", "content": "Say hello"}],
        )
        message = await raw.parse()
    assert message.type == "message" and message.role == "assistant" and message.model == model
    assert message.stop_reason == "end_turn"
    assert message.content[0].type == "text"
    if model != "mock":
        assert message.content[0].text == "Hello from the fake"
        assert message.usage.input_tokens == PROMPT_TOKENS and message.usage.output_tokens == 4
        sent = json.dumps(wired.fake.requests[-1].body)
        assert "Be brief." in sent and "Say hello" in sent
    assert raw.headers["x-conduit-provider"] == MODELS[model][0]


@pytest.mark.parametrize("model", [*CHAT_MODELS, "mock"])
async def test_stream_events_as_the_sdk_reads_them(wired: Wired, model: str) -> None:
    async with (
        client(wired) as c,
        c.messages.stream(
            model=model, max_tokens=100, messages=[{"role": "user", "content": "Say hello"}]
        ) as stream,
    ):
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "content_block_stop" in kinds
    assert kinds[-2] == "message_delta"
    text = final.content[0].text  # type: ignore[union-attr]
    assert text and final.stop_reason == "end_turn"
    if model != "mock":
        assert text == "Hello from the fake"
        assert final.usage.output_tokens == 4 and final.usage.input_tokens == PROMPT_TOKENS


@pytest.mark.parametrize("model", ["gpt", "claude", "gem"])
async def test_tool_use_round_trip(wired: Wired, model: str) -> None:
    async with client(wired) as c:
        asked = await c.messages.create(
            model=model,
            max_tokens=100,
            tools=[WEATHER],  # type: ignore[list-item]
            tool_choice={"type": "any"},
            messages=[{"role": "user", "content": "Weather in Paris?"}],
        )
        assert asked.stop_reason == "tool_use"
        use = next(b for b in asked.content if b.type == "tool_use")
        assert use.name == "get_weather" and use.input == {"city": "Paris"}  # type: ignore[union-attr]
        answered = await c.messages.create(
            model=model,
            max_tokens=100,
            tools=[WEATHER],  # type: ignore[list-item]
            messages=[
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": asked.content},  # type: ignore[typeddict-item]
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": use.id, "content": "21 C"}  # type: ignore[union-attr]
                    ],
                },
            ],
        )
    assert answered.content[0].text == "Hello from the fake"  # type: ignore[union-attr]
    assert "21 C" in json.dumps(wired.fake.requests[-1].body)


async def test_streamed_tool_use(wired: Wired) -> None:
    async with (
        client(wired) as c,
        c.messages.stream(
            model="gpt",
            max_tokens=100,
            tools=[WEATHER],  # type: ignore[list-item]
            tool_choice={"type": "any"},
            messages=[{"role": "user", "content": "Weather?"}],
        ) as stream,
    ):
        partial = ""
        async for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                partial += event.delta.partial_json
        final = await stream.get_final_message()
    use = final.content[-1]
    assert use.type == "tool_use" and use.input == {"city": "Paris"}
    assert json.loads(partial) == {"city": "Paris"} and final.stop_reason == "tool_use"


async def test_errors_in_anthropic_envelope(wired: Wired) -> None:
    async with client(wired, key="condt_not_a_key") as c:
        with pytest.raises(anthropic.AuthenticationError) as bad_key:
            await c.messages.create(
                model="gpt", max_tokens=10, messages=[{"role": "user", "content": "x"}]
            )
    assert bad_key.value.body == {  # type: ignore[comparison-overlap]
        "type": "error",
        "error": {
            "type": "authentication_error",
            "message": bad_key.value.body["error"]["message"],
        },  # type: ignore[index]
    }
    before = len(wired.fake.requests)
    async with httpx2.AsyncClient(base_url=wired.gateway.url) as http:
        r = await http.post(
            "/v1/messages",
            json={"model": "gpt", "messages": [{"role": "user", "content": "x"}]},
            headers={"x-api-key": wired.key},
        )
        assert r.status_code == 400
        assert r.json()["type"] == "error"
        assert r.json()["error"]["type"] == "invalid_request_error"
        assert "max_tokens" in r.json()["error"]["message"]
        r = await http.post(
            "/v1/messages",
            json={"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
            headers={"x-api-key": wired.key},
        )
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
        r = await http.post(
            "/v1/messages",
            json={
                "model": "gpt",
                "max_tokens": 5,
                "messages": [
                    {"role": "user", "content": [{"type": "document", "source": {"type": "text"}}]}
                ],
            },
            headers={"x-api-key": wired.key},
        )
        assert r.status_code == 400 and "document" in r.json()["error"]["message"]
    assert len(wired.fake.requests) == before  # nothing reached a provider


async def test_count_tokens_needs_a_model_the_key_may_use(wired: Wired) -> None:
    async with httpx2.AsyncClient(base_url=wired.gateway.url) as http:
        for body, status in (
            ({}, 400),  # Anthropic's API requires model
            ({"model": "no-such-model"}, 404),
            ({"model": "gpt"}, 200),
        ):
            r = await http.post(
                "/v1/messages/count_tokens",
                json={"messages": [{"role": "user", "content": "hi"}], **body},
                headers={"x-api-key": wired.key},
            )
            assert r.status_code == status, r.text
            if status != 200:
                assert r.json()["type"] == "error"  # Anthropic's envelope


async def test_count_tokens_and_the_request_log(wired: Wired) -> None:
    async with client(wired) as c:
        counted = await c.messages.count_tokens(
            model="gpt", messages=[{"role": "user", "content": "word " * 40}]
        )
        assert counted.input_tokens >= 40
        await c.messages.create(
            model="gpt", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    await settled(wired.gateway)
    assert wired.gateway.ctx is not None
    await wired.gateway.ctx.recorder.flush()
    entry: dict[str, Any] = (await wired.admin.logs())["data"][0]
    assert entry["endpoint"] == "messages" and entry["completion_tokens"] == 4
    assert entry["cost"] is not None and entry["cost"] > 0


async def test_native_relay_keeps_what_only_anthropic_does(wired: Wired) -> None:
    document = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "The sky is green."},
    }
    system = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    async with client(wired) as c:
        raw = await c.messages.with_raw_response.create(
            model="claude",
            max_tokens=50,
            system=system,  # type: ignore[arg-type]
            messages=[{"role": "user", "content": [document, {"type": "text", "text": "Sky?"}]}],  # type: ignore[list-item]
            extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
        )
        message = await raw.parse()
        upstream = wired.fake.requests[-1]
        # As sent: the document, the cache marker and the beta flag reach Anthropic.
        assert upstream.body["system"] == system
        assert upstream.body["messages"][0]["content"][0] == document
        assert upstream.body["model"] == "claude-sonnet-4-5"
        assert upstream.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
        assert message.model == "claude" and message.content[0].text == "Hello from the fake"  # type: ignore[union-attr]
        # A provider that only speaks chat cannot take a document: said, not dropped.
        with pytest.raises(anthropic.BadRequestError) as refused:
            await c.messages.create(
                model="gpt",
                max_tokens=50,
                messages=[{"role": "user", "content": [document]}],  # type: ignore[list-item]
            )
        assert "document" in refused.value.message


BAD_FIELDS: list[tuple[dict[str, Any], str]] = [
    ({"stream": "false"}, "stream"),
    ({"stream": "yes"}, "stream"),
    ({"stream": 1}, "stream"),
    ({"temperature": 5}, "temperature"),
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": "0.5"}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_p": -1}, "top_p"),
    ({"top_k": -1}, "top_k"),
    ({"top_k": 2.5}, "top_k"),
    ({"top_k": True}, "top_k"),
    ({"tool_choice": {"type": "any"}}, "tool_choice"),
    ({"tool_choice": {"type": "tool", "name": "get_weather"}}, "tool_choice"),
    ({"tool_choice": {"type": "tool", "name": "nope"}, "tools": [WEATHER]}, "tool_choice.name"),
    ({"tool_choice": {"type": "tool"}, "tools": [WEATHER]}, "tool_choice.name"),
    ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
    ({"metadata": {"user_id": 5}}, "metadata.user_id"),
    ({"metadata": "u"}, "metadata"),
]


@pytest.mark.parametrize("model", ["gpt", "claude"])  # translated through chat, relayed as sent
async def test_bad_fields_are_refused_before_anything_is_sent(wired: Wired, model: str) -> None:
    async with httpx2.AsyncClient(
        base_url=wired.gateway.url, headers={"x-api-key": wired.key}
    ) as http:
        for extra, field in BAD_FIELDS:
            body = {"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
            r = await http.post("/v1/messages", json={**body, **extra})
            assert r.status_code == 400, (extra, r.text)
            assert r.headers["content-type"].startswith("application/json")
            error = r.json()
            assert error["type"] == "error", error
            assert error["error"]["type"] == "invalid_request_error", error
            assert error["error"]["message"].startswith(field), (extra, error)
    assert wired.fake.requests == []
    await settled(wired.gateway)
    assert wired.gateway.ctx is not None
    await wired.gateway.ctx.recorder.flush()
    logs = (await wired.admin.logs())["data"]
    assert len(logs) == len(BAD_FIELDS)  # refusals are logged, as a stream of none of them
    assert all(e["status"] == 400 and not e.get("cost") and not e["stream"] for e in logs)
    assert (await wired.admin.get_key(wired.key_id))["spend"] == 0


async def test_good_edge_values_still_go_through(wired: Wired) -> None:
    body = {
        "model": "gpt",
        "max_tokens": 10,
        "stream": False,
        "temperature": 1,
        "top_p": 0,
        "top_k": 0,
        "metadata": {"user_id": "u-1"},
        "tools": [WEATHER],
        "tool_choice": {"type": "tool", "name": "get_weather"},
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
    }
    async with httpx2.AsyncClient(
        base_url=wired.gateway.url, headers={"x-api-key": wired.key}
    ) as http:
        r = await http.post("/v1/messages", json=body)
        assert r.status_code == 200 and r.json()["type"] == "message", r.text
        sent = wired.fake.requests[-1].body
        assert sent["temperature"] == 1 and sent["top_p"] == 0
        assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
        # null is as good as not given
        plain = {"model": "gpt", "max_tokens": 5, "messages": body["messages"]}
        r = await http.post("/v1/messages", json={**plain, "stream": None, "temperature": None})
    assert r.status_code == 200 and r.json()["type"] == "message", r.text
