"""What real providers send that the first fakes never did (issue 22): text before a tool
call, parallel calls, thinking, error events, every stop reason; Gemini's empty SAFETY
answers, malformed calls, several calls in one chunk, RetryInfo and in-stream errors;
Azure's content filter; OpenAI's interleaved choices, refusals, logprobs and
retry-after-ms. Each goes through the gateway as a client would see it."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.proxy_setup import Wired

pytestmark = pytest.mark.asyncio
HI = [{"role": "user", "content": "Weather in Paris?"}]
TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


async def _stream(wired: Wired, **body: Any) -> dict[str, Any]:
    """Everything a streamed chat answer said, per choice: text, refusal, calls, finish."""
    seen: dict[str, Any] = {"choices": {}, "usage": None, "chunks": 0}
    async with wired.client() as client:
        stream = await client.chat.completions.create(
            stream=True, stream_options={"include_usage": True}, messages=HI, **body
        )
        async for chunk in stream:
            seen["chunks"] += 1
            for choice in chunk.choices:
                mine = seen["choices"].setdefault(
                    choice.index,
                    {"text": "", "refusal": "", "calls": {}, "finish": None, "logprobs": 0},
                )
                mine["text"] += choice.delta.content or ""
                mine["refusal"] += choice.delta.refusal or ""
                for call in choice.delta.tool_calls or []:
                    entry = mine["calls"].setdefault(call.index, {"name": None, "args": ""})
                    if call.function and call.function.name:
                        entry["name"] = call.function.name
                    entry["args"] += (call.function.arguments or "") if call.function else ""
                if choice.logprobs and choice.logprobs.content:
                    mine["logprobs"] += len(choice.logprobs.content)
                mine["finish"] = choice.finish_reason or mine["finish"]
            if chunk.usage is not None:
                seen["usage"] = chunk.usage.model_dump()
    return seen


# -- Anthropic ----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_text_before_a_call_and_parallel_calls(wired: Wired, stream: bool) -> None:
    wired.fake.then(text_then_tool=True, parallel=True)
    body: dict[str, Any] = {"model": "claude", "tools": [TOOL], "tool_choice": "required"}
    if stream:
        choice = (await _stream(wired, **body))["choices"][0]
        text = choice["text"]
        calls = [(c["name"], json.loads(c["args"])) for _, c in sorted(choice["calls"].items())]
        finish = choice["finish"]
    else:
        async with wired.client() as client:
            answer = await client.chat.completions.create(messages=HI, **body)  # type: ignore[arg-type]
        message = answer.choices[0].message
        text = message.content or ""
        calls = [
            (c.function.name, json.loads(c.function.arguments))
            for c in message.tool_calls or []
            if c.type == "function"
        ]
        finish = answer.choices[0].finish_reason
    assert text == "Hello from the fake"
    assert calls == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Lyon"})]
    assert finish == "tool_calls"


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_thinking_stays_out_of_the_answer(wired: Wired, stream: bool) -> None:
    wired.fake.then(thinking=True)
    if stream:
        choice = (await _stream(wired, model="claude"))["choices"][0]
        text, finish = choice["text"], choice["finish"]
    else:
        async with wired.client() as client:
            answer = await client.chat.completions.create(model="claude", messages=HI)  # type: ignore[arg-type]
        text, finish = answer.choices[0].message.content, answer.choices[0].finish_reason
    assert text == "Hello from the fake" and finish == "stop"


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("refusal", "content_filter"),
    ],
)
async def test_every_anthropic_stop_reason(wired: Wired, reason: str, finish: str) -> None:
    wired.fake.then(stop_reason=reason).then(stop_reason=reason)
    async with wired.client() as client:
        answer = await client.chat.completions.create(model="claude", messages=HI)  # type: ignore[arg-type]
    assert answer.choices[0].finish_reason == finish
    assert (await _stream(wired, model="claude"))["choices"][0]["finish"] == finish


async def test_an_anthropic_error_event_first_is_an_error_status(wired: Wired) -> None:
    for _ in range(5):  # whatever the retries, each attempt meets the same error event
        wired.fake.then(error_event="first")
    async with wired.client() as client:
        with pytest.raises(openai.APIStatusError) as failed:
            await _stream_all(client, "claude")
    assert failed.value.status_code >= 500
    assert "Overloaded" in failed.value.message


async def test_an_anthropic_error_event_mid_stream_ends_it_with_an_error(wired: Wired) -> None:
    wired.fake.then(error_event="mid")
    text: list[str] = []
    async with wired.client() as client:
        stream = await client.chat.completions.create(model="claude", messages=HI, stream=True)  # type: ignore[arg-type]
        with pytest.raises(openai.APIError) as failed:
            await _collect(stream, text)
    assert "".join(text) == "Hello from the fake"  # what came before the error reached us
    assert "Overloaded" in str(failed.value)


async def _collect(stream: Any, text: list[str]) -> None:
    """Read a chat stream, keeping its text as it comes (the stream may end in an error)."""
    async for chunk in stream:
        for choice in chunk.choices:
            text.append(choice.delta.content or "")


async def _stream_all(client: openai.AsyncOpenAI, model: str) -> None:
    stream = await client.chat.completions.create(model=model, messages=HI, stream=True)  # type: ignore[arg-type]
    async for _ in stream:
        pass


# -- Gemini -------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_a_gemini_safety_stop_with_no_content_is_a_content_filter(
    wired: Wired, stream: bool
) -> None:
    wired.fake.then(finish="SAFETY")
    if stream:
        choice = (await _stream(wired, model="gem"))["choices"][0]
        text, finish = choice["text"], choice["finish"]
    else:
        async with wired.client() as client:
            answer = await client.chat.completions.create(model="gem", messages=HI)  # type: ignore[arg-type]
        text, finish = answer.choices[0].message.content, answer.choices[0].finish_reason
    assert finish == "content_filter" and not text


@pytest.mark.parametrize("stream", [False, True])
async def test_a_malformed_gemini_call_is_asked_again(wired: Wired, stream: bool) -> None:
    wired.fake.then(finish="MALFORMED_FUNCTION_CALL")
    body: dict[str, Any] = {"model": "gem", "tools": [TOOL], "tool_choice": "required"}
    before = len(wired.fake.requests)
    if stream:
        choice = (await _stream(wired, **body))["choices"][0]
        finish, args = choice["finish"], [c["args"] for c in choice["calls"].values()]
    else:
        async with wired.client() as client:
            answer = await client.chat.completions.create(messages=HI, **body)  # type: ignore[arg-type]
        finish = answer.choices[0].finish_reason
        args = [c.function.arguments for c in answer.choices[0].message.tool_calls or []]  # type: ignore[union-attr]
    assert len(wired.fake.requests) - before == 2  # the empty answer, then a good one
    assert finish == "tool_calls" and [json.loads(a) for a in args] == [{"city": "Paris"}]


@pytest.mark.parametrize("stream", [False, True])
async def test_several_gemini_calls_in_one_chunk(wired: Wired, stream: bool) -> None:
    wired.fake.then(calls=3)
    body: dict[str, Any] = {"model": "gem", "tools": [TOOL], "tool_choice": "required"}
    if stream:
        choice = (await _stream(wired, **body))["choices"][0]
        cities = [json.loads(c["args"])["city"] for _, c in sorted(choice["calls"].items())]
        ids_distinct = True
    else:
        async with wired.client() as client:
            answer = await client.chat.completions.create(messages=HI, **body)  # type: ignore[arg-type]
        calls = answer.choices[0].message.tool_calls or []
        cities = [json.loads(c.function.arguments)["city"] for c in calls]  # type: ignore[union-attr]
        ids_distinct = len({c.id for c in calls}) == 3
    assert cities == ["Paris", "Lyon", "Nice"] and ids_distinct


async def test_a_gemini_error_mid_stream_ends_it_with_an_error(wired: Wired) -> None:
    wired.fake.then(stream_error=True)
    text: list[str] = []
    async with wired.client() as client:
        stream = await client.chat.completions.create(model="gem", messages=HI, stream=True)  # type: ignore[arg-type]
        with pytest.raises(openai.APIError) as failed:
            await _collect(stream, text)
    assert "".join(text) == "Hello"  # the first chunk came through before the error
    assert "overloaded" in str(failed.value)


async def test_gemini_retry_info_becomes_retry_after(wired_with: Any) -> None:
    wired = await wired_with(max_retries=0)
    wired.fake.then(
        status=429,
        body={
            "error": {
                "code": 429,
                "message": "You exceeded your current quota.",
                "status": "RESOURCE_EXHAUSTED",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}
                ],
            }
        },
    )
    async with wired.client() as client:
        with pytest.raises(openai.RateLimitError) as limited:
            await client.chat.completions.create(model="gem", messages=HI)  # type: ignore[arg-type]
    assert limited.value.response.headers["retry-after"] == "37"


# -- Azure and OpenAI ---------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_azure_content_filter_stops_and_says_why(wired: Wired, stream: bool) -> None:
    wired.fake.then(filtered=True)
    if stream:
        seen = await _stream(wired, model="azure-gpt")
        finish = seen["choices"][0]["finish"]
    else:
        async with wired.client() as client:
            answer = await client.chat.completions.create(model="azure-gpt", messages=HI)  # type: ignore[arg-type]
        finish = answer.choices[0].finish_reason
        verdicts = (answer.choices[0].model_extra or {})["content_filter_results"]
        assert verdicts["violence"]["filtered"] is True  # Azure's annotations reach the client
    assert finish == "content_filter"


async def test_openai_interleaved_choices_stay_apart(wired: Wired) -> None:
    wired.fake.then(interleave=True)
    seen = await _stream(wired, model="gpt", n=2)
    assert sorted(seen["choices"]) == [0, 1]
    for choice in seen["choices"].values():
        assert choice["text"] == "Hello from the fake" and choice["finish"] == "stop"
    assert seen["usage"]["completion_tokens"] == 8


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_refusals_and_logprobs_reach_the_client(wired: Wired, stream: bool) -> None:
    wired.fake.then(refusal="I can't help with that.").then()
    if stream:
        refused = (await _stream(wired, model="gpt"))["choices"][0]
        assert refused["refusal"].strip() == "I can't help with that." and not refused["text"]
        counted = (await _stream(wired, model="gpt", logprobs=True))["choices"][0]["logprobs"]
    else:
        async with wired.client() as client:
            answer = await client.chat.completions.create(model="gpt", messages=HI)  # type: ignore[arg-type]
            assert answer.choices[0].message.refusal == "I can't help with that."
            with_logprobs = await client.chat.completions.create(
                model="gpt",
                messages=HI,  # type: ignore[arg-type]
                logprobs=True,
            )
        logprobs = with_logprobs.choices[0].logprobs
        counted = len(logprobs.content or []) if logprobs else 0
    assert counted == 4  # one per token of "Hello from the fake"


async def test_openai_retry_after_ms_is_honoured(wired_with: Any) -> None:
    wired = await wired_with(max_retries=0)
    wired.fake.then(status=429, headers={"retry-after-ms": "2500"})
    async with wired.client() as client:
        with pytest.raises(openai.RateLimitError) as limited:
            await client.chat.completions.create(model="gpt", messages=HI)  # type: ignore[arg-type]
    assert limited.value.response.headers["retry-after"] == "3"  # 2.5 s, rounded up


@pytest.mark.parametrize("stream", [False, True])
async def test_a_refusal_survives_translation_to_responses(wired: Wired, stream: bool) -> None:
    """Azure has no Responses API here: its chat answer is translated, refusal included."""
    wired.fake.then(refusal="I can't help with that.")
    async with wired.client() as client:
        if stream:
            refusal, done = "", None
            events = await client.responses.create(model="azure-gpt", input="hi", stream=True)
            async for event in events:
                if event.type == "response.refusal.delta":
                    refusal += event.delta
                elif event.type == "response.completed":
                    done = event.response
            assert done is not None
            response = done
            assert refusal.strip() == "I can't help with that."
        else:
            response = await client.responses.create(model="azure-gpt", input="hi")
    parts = [p for item in response.output if item.type == "message" for p in item.content]
    assert [(p.type, getattr(p, "refusal", "").strip()) for p in parts] == [
        ("refusal", "I can't help with that.")
    ]


async def test_a_refusal_survives_translation_to_messages(wired: Wired) -> None:
    """An Anthropic-style client on an OpenAI model: the refusal is the answer's text and
    its stop reason says refusal."""
    import anthropic

    wired.fake.then(refusal="I can't help with that.")
    async with anthropic.AsyncAnthropic(
        base_url=wired.gateway.url, api_key=wired.key, max_retries=0
    ) as client:
        message = await client.messages.create(
            model="gpt", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        )
    text = "".join(b.text for b in message.content if b.type == "text")
    assert text.strip() == "I can't help with that." and message.stop_reason == "refusal"


# -- Anthropic streams shaped like the SDK's recorded fixtures ----------------------------


async def test_replayed_anthropic_streams_translate_to_chat(wired: Wired) -> None:
    wired.fake.then(replay="tool_after_text")
    choice = (await _stream(wired, model="claude", tools=[TOOL]))["choices"][0]
    assert choice["text"] == "Let me look that up." and choice["finish"] == "tool_calls"
    assert [json.loads(c["args"]) for c in choice["calls"].values()] == [{"city": "Paris"}]
    wired.fake.then(replay="refusal")
    refused = (await _stream(wired, model="claude"))["choices"][0]
    assert refused["text"] == "" and refused["finish"] == "content_filter"
    wired.fake.then(replay="fallback")
    fell_back = (await _stream(wired, model="claude"))["choices"][0]
    assert fell_back["text"] == "Hello there!" and fell_back["finish"] == "stop"
    wired.fake.then(replay="thinking_padded")
    thought = await _stream(wired, model="claude")
    assert thought["choices"][0]["text"] == "An eclipse is a shadow."
    assert thought["usage"]["completion_tokens"] == 12


@pytest.mark.parametrize("name", ["tool_after_text", "refusal", "fallback", "thinking_padded"])
async def test_replayed_anthropic_streams_reach_messages_clients_whole(
    wired: Wired, name: str
) -> None:
    """Relayed natively, the SDK's own stream accumulator rebuilds the same message."""
    import anthropic

    wired.fake.then(replay=name)
    async with (
        anthropic.AsyncAnthropic(
            base_url=wired.gateway.url, api_key=wired.key, max_retries=0
        ) as client,
        client.messages.stream(
            model="claude", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        message = await stream.get_final_message()
    kinds = [block.type for block in message.content]
    expected = {
        "tool_after_text": (["text", "tool_use"], "tool_use"),
        "refusal": (["text"], "refusal"),
        "fallback": (["fallback", "text"], "end_turn"),
        "thinking_padded": (["thinking", "text"], "end_turn"),
    }[name]
    assert (kinds, message.stop_reason) == expected
