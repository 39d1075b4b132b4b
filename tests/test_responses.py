"""The Responses API through every chat backend, with the official SDK as the client."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx2
import openai
import pydantic
import pytest

from conduit_tornado.api.responses_stored import packed, unpacked
from conduit_tornado.store import MemoryStore, Store
from tests.conftest import GatewayFactory, settled
from tests.fakes.providers import API_KEY, PROMPT_TOKENS
from tests.openai_schemas import validate
from tests.proxy_setup import CHAT_MODELS, MODELS, Wired

pytestmark = pytest.mark.asyncio
TRANSLATED = [*CHAT_MODELS, "mock"]
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def _dump(model: pydantic.BaseModel) -> dict[str, object]:
    data = model.model_dump(mode="json", exclude_unset=True, by_alias=True)
    data.pop("output_text", None)  # the SDK's own convenience property
    return data


@pytest.mark.parametrize("model", TRANSLATED)
async def test_create_answers_a_response_object(wired: Wired, model: str) -> None:
    async with wired.client() as client:
        raw = await client.responses.with_raw_response.create(
            model=model, input="Say hello", instructions="Be brief."
        )
        response = raw.parse()
    validate(_dump(response), "Response")
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.model == model and response.status == "completed"
    if model == "mock":
        assert response.output_text
    else:
        assert response.output_text == "Hello from the fake"
        assert response.usage is not None and response.usage.input_tokens == PROMPT_TOKENS
        assert response.usage.output_tokens == 4
        assert response.usage.total_tokens == PROMPT_TOKENS + 4
        # The upstream got chat: the instructions first, then the input as a user message.
        sent = wired.fake.requests[-1].body
        text = json.dumps(sent)
        assert "Be brief." in text and "Say hello" in text
    assert raw.headers["x-conduit-provider"] == MODELS[model][0]
    assert response.instructions == "Be brief."


async def _raw_events(
    wired: Wired, body: dict[str, object], schema: bool = True
) -> list[dict[str, Any]]:
    """POST /v1/responses with stream, its SSE read as sent: each data validated against
    OpenAI's schema (unless ``schema`` is false) and named by its event line."""
    events = []
    async with (
        httpx2.AsyncClient(base_url=wired.gateway.url, timeout=30) as http,
        http.stream(
            "POST",
            "/v1/responses",
            json={**body, "stream": True},
            headers={"Authorization": f"Bearer {wired.key}"},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                event = json.loads(line[len("data: ") :])
                if schema:
                    validate(event, "ResponseStreamEvent")
                assert event["type"] == name
                events.append(event)
    return events


@pytest.mark.parametrize("model", TRANSLATED)
async def test_stream_events_in_order_and_in_schema(wired: Wired, model: str) -> None:
    events = await _raw_events(wired, {"model": model, "input": "Say hello"})
    kinds = [e["type"] for e in events]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == deltas != ""
    if model != "mock":
        assert deltas == "Hello from the fake"
    assert final["usage"]["output_tokens"] > 0 and final["model"] == model
    # The SDK's own stream helper reads the same stream into the same response.
    async with (
        wired.client() as client,
        client.responses.stream(model=model, input="Say hello") as stream,
    ):
        seen = [event.type async for event in stream]
        answer = await stream.get_final_response()
    assert seen == kinds and answer.output_text == deltas


async def test_follow_up_rebuilds_the_history_for_a_chat_backend(wired: Wired) -> None:
    async with wired.client() as client:
        first = await client.responses.create(
            model="claude", input="My name is Ada.", instructions="Answer in French."
        )
        second = await client.responses.create(
            model="claude", input="What is my name?", previous_response_id=first.id
        )
    assert second.previous_response_id == first.id
    # The fake Anthropic upstream received the whole conversation, in order, and no
    # instructions: a follow-up does not inherit them.
    body = wired.fake.requests[-1].body
    said = json.dumps(body["messages"])
    assert said.index("My name is Ada.") < said.index("Hello from the fake")
    assert said.index("Hello from the fake") < said.index("What is my name?")
    assert "Answer in French." not in json.dumps(body)
    # A stored response can be read back, and its input items listed.
    async with wired.client() as client:
        again = await client.responses.retrieve(second.id)
        items = await client.responses.input_items.list(second.id)
    assert again.id == second.id and again.output_text == second.output_text
    assert [i.type for i in items.data] == ["message"]
    validate(items.model_dump(mode="json", exclude_unset=True), "ResponseItemList")


@pytest.mark.parametrize("model", ["gpt", "claude", "gem"])
async def test_tool_call_round_trip(wired: Wired, model: str) -> None:
    async with wired.client() as client:
        asked = await client.responses.create(
            model=model, input="Weather in Paris?", tools=[WEATHER], tool_choice="required"
        )
        calls = [item for item in asked.output if item.type == "function_call"]
        assert len(calls) == 1 and calls[0].name == "get_weather"
        assert json.loads(calls[0].arguments) == {"city": "Paris"}
        answered = await client.responses.create(
            model=model,
            previous_response_id=asked.id,
            input=[
                {
                    "type": "function_call_output",
                    "call_id": calls[0].call_id,
                    "output": '{"temperature": 21}',
                }
            ],
            tools=[WEATHER],
        )
    assert answered.output_text == "Hello from the fake"
    assert '{\\"temperature\\": 21}' in json.dumps(wired.fake.requests[-1].body) or (
        "temperature" in json.dumps(wired.fake.requests[-1].body)
    )


async def test_streamed_tool_call(wired: Wired) -> None:
    events = await _raw_events(
        wired,
        {"model": "claude", "input": "Weather?", "tools": [WEATHER], "tool_choice": "required"},
    )
    arguments = "".join(
        e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"
    )
    call = events[-1]["response"]["output"][-1]
    assert call["type"] == "function_call" and call["name"] == "get_weather"
    assert json.loads(arguments) == json.loads(call["arguments"]) == {"city": "Paris"}
    done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert len(done) == 1 and done[0]["arguments"] == call["arguments"]


class City(pydantic.BaseModel):
    city: str


async def test_parse_with_a_pydantic_model(wired: Wired) -> None:
    wired.fake.then(text='{"city": "Paris"}')
    async with wired.client() as client:
        parsed = await client.responses.parse(model="gpt", input="Where?", text_format=City)
    assert parsed.output_parsed == City(city="Paris")
    sent = wired.fake.requests[-1].body["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "City"


async def test_a_chat_answer_of_the_wrong_shape_is_a_bad_response(wired: Wired) -> None:
    odd = {"role": "assistant", "content": 123}  # content must be text or parts
    body = {"id": "c", "object": "chat.completion", "choices": [{"index": 0, "message": odd}]}
    for _ in range(5):  # a bad response is asked again, within the retry cap
        wired.fake.then(status=200, body=body)
    before = len(wired.fake.requests)
    async with wired.client() as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.responses.create(model="gpt", input="hi")
    assert info.value.status_code == 502
    assert "unexpected shape" in str(info.value.message)
    assert 1 < len(wired.fake.requests) - before < 5
    wired.fake.script.clear()


async def test_a_response_belongs_to_its_key(wired: Wired) -> None:
    other = (await wired.admin.create_key(name="other"))["key"]
    async with wired.client() as client:
        mine = await client.responses.create(model="gpt", input="hi")
    async with openai.AsyncOpenAI(
        base_url=wired.gateway.url + "/v1", api_key=other, max_retries=0
    ) as theirs:
        with pytest.raises(openai.NotFoundError):
            await theirs.responses.retrieve(mine.id)
        with pytest.raises(openai.NotFoundError):
            await theirs.responses.delete(mine.id)
        with pytest.raises(openai.NotFoundError) as caught:
            await theirs.responses.create(model="gpt", input="x", previous_response_id=mine.id)
        assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]
    async with wired.client() as client:
        assert (await client.responses.retrieve(mine.id)).id == mine.id
        await client.responses.delete(mine.id)
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(mine.id)


async def test_store_false_keeps_nothing(wired: Wired) -> None:
    async with wired.client() as client:
        kept = await client.responses.create(model="gpt", input="hi", store=False)
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(kept.id)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": [{"type": "computer_call_output", "call_id": "x"}]}, "input[0].type"),
        ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        (
            {"input": [{"type": "function_call_output", "call_id": "nope", "output": "1"}]},
            "input[0]",
        ),
        ({"input": "hi", "background": True, "store": False}, "background"),
        ({"input": [{"role": "wizard", "content": "x"}]}, "input[0].role"),
        ({"input": [{"role": "user", "content": [{"type": "input_text", "text": 5}]}]}, None),
        ({"input": "hi", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
        ({"input": "hi", "max_output_tokens": "many"}, "max_output_tokens"),
        ({"input": []}, "input"),
        # Booleans are booleans: "false" would otherwise stream or run in the background.
        ({"input": "hi", "stream": "false"}, "stream"),
        ({"input": "hi", "stream": "yes"}, "stream"),
        ({"input": "hi", "background": "false"}, "background"),
        ({"input": "hi", "parallel_tool_calls": "no"}, "parallel_tool_calls"),
        ({"input": "hi", "store": 0}, "store"),
        # Values OpenAI's spec refuses, several of them echoed in the Response otherwise.
        ({"input": "hi", "temperature": "hot"}, "temperature"),
        ({"input": "hi", "temperature": 2.5}, "temperature"),
        ({"input": "hi", "top_p": 1.5}, "top_p"),
        ({"input": "hi", "top_logprobs": 21}, "top_logprobs"),
        ({"input": "hi", "top_logprobs": 2.5}, "top_logprobs"),
        ({"input": "hi", "text": "json"}, "text"),
        ({"input": "hi", "text": {"verbosity": "loud"}}, "text.verbosity"),
        ({"input": "hi", "reasoning": "high"}, "reasoning"),
        ({"input": "hi", "reasoning": {"effort": "extreme"}}, "reasoning.effort"),
        ({"input": "hi", "reasoning": {"summary": "brief"}}, "reasoning.summary"),
        ({"input": "hi", "truncation": "sometimes"}, "truncation"),
        ({"input": "hi", "service_tier": "gold"}, "service_tier"),
        ({"input": "hi", "user": 42}, "user"),
        ({"input": "hi", "safety_identifier": ["u1"]}, "safety_identifier"),
        ({"input": "hi", "prompt_cache_key": {"k": 1}}, "prompt_cache_key"),
        ({"input": "hi", "prompt_cache_retention": "1w"}, "prompt_cache_retention"),
        ({"input": "hi", "include": "reasoning.encrypted_content"}, "include"),
        ({"input": "hi", "include": ["everything"]}, "include[0]"),
        ({"input": "hi", "max_tool_calls": 0}, "max_tool_calls"),
        ({"input": "hi", "tool_choice": "required"}, "tool_choice"),
        ({"input": "hi", "tool_choice": {"type": "function", "name": "f"}}, "tool_choice"),
        (
            {"input": [{"role": "user", "content": [{"type": "output_text", "text": "x"}]}]},
            "input[0].content[0].type",
        ),
        (
            {
                "input": "hi",
                "instructions": [
                    {"role": "system", "content": [{"type": "refusal", "refusal": "no"}]}
                ],
            },
            "instructions[0].content[0].type",
        ),
        (
            {
                "input": [
                    {"role": "user", "content": "Weather?"},
                    {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                    {"role": "user", "content": "Well?"},
                ]
            },
            "input",
        ),
    ],
)
async def test_bad_input_is_a_400_naming_the_param_and_costs_nothing(
    wired: Wired, body: dict[str, object], param: str | None
) -> None:
    before = len(wired.fake.requests)
    async with httpx2.AsyncClient(base_url=wired.gateway.url) as http:
        r = await http.post(
            "/v1/responses",
            json={"model": "gpt", **body},
            headers={"Authorization": f"Bearer {wired.key}"},
        )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    validate(r.json(), "ErrorResponse")
    if param is not None:
        assert error["param"] == param
    else:
        assert error["param"]
    assert len(wired.fake.requests) == before  # nothing reached the provider
    assert wired.gateway.ctx is not None
    assert await wired.gateway.ctx.store.count("responses", {}) == 0


async def _post(wired: Wired, body: dict[str, Any]) -> httpx2.Response:
    async with httpx2.AsyncClient(base_url=wired.gateway.url, timeout=30) as http:
        return await http.post(
            "/v1/responses", json=body, headers={"Authorization": f"Bearer {wired.key}"}
        )


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (
            {"stream": "false"},
            "invalid_type",
            "Invalid type for 'stream': expected a boolean, but got a string instead.",
        ),
        (
            {"reasoning": {"effort": "extreme"}},
            "invalid_value",
            "Invalid value for 'reasoning.effort': 'extreme'. Supported values are: 'none', "
            "'minimal', 'low', 'medium', 'high', 'xhigh', 'max'.",
        ),
        (
            {"tool_choice": "required"},
            "invalid_value",
            "Tool choice 'required' must be specified with 'tools' parameter.",
        ),
        (
            {
                "input": [
                    {"role": "user", "content": "hi"},
                    {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                    {"role": "user", "content": "and?"},
                ]
            },
            "invalid_value",
            "No tool output found for function call c1.",
        ),
    ],
)
async def test_refusals_say_what_openai_says(
    wired: Wired, body: dict[str, Any], code: str, message: str
) -> None:
    r = await _post(wired, {"model": "gpt", "input": "hi", **body})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"] == message


async def test_echoed_params_are_what_the_sdk_reads(wired: Wired) -> None:
    """Valid values of the checked parameters, nulls among them, pass, and the Response
    echoing them is one the SDK validates strictly (its parse does not)."""
    async with wired.client() as client:
        raw = await client.responses.with_raw_response.create(
            model="gpt",
            input="hi",
            temperature=0.5,
            top_p=0.9,
            top_logprobs=2,
            service_tier="flex",
            prompt_cache_key="agent-7",
            prompt_cache_retention="24h",
            reasoning={"effort": "low", "summary": "auto"},
            text={"verbosity": "low"},
            include=[],
            truncation="disabled",
            max_tool_calls=3,
            safety_identifier="u1",
            parallel_tool_calls=None,
            store=None,
            stream=None,
            background=None,
        )
    data = json.loads(raw.text)
    response = openai.types.responses.Response.model_validate(data)
    validate(data, "Response")
    assert response.status == "completed" and response.temperature == 0.5
    assert response.prompt_cache_retention == "24h" and response.service_tier == "flex"
    assert response.parallel_tool_calls is True and response.store is True
    assert response.reasoning is not None and response.reasoning.effort == "low"
    sent = wired.fake.requests[-1].body
    assert sent["reasoning_effort"] == "low" and sent["user"] == "u1" and sent["logprobs"]
    named = raw.headers["x-conduit-dropped-params"].split(",")
    assert "prompt_cache_retention" in named and "service_tier" in named
    assert "include" not in named and "max_tool_calls" in named
    async with wired.client() as client:  # stored, store null being the default
        assert (await client.responses.retrieve(response.id)).id == response.id


async def test_dropped_params_name_what_the_request_sent(wired: Wired) -> None:
    """Gemini has no user: the header names the field the request gave it as; a null or
    empty field asks for nothing, so nothing is named for it."""
    for name in ("safety_identifier", "user"):
        r = await _post(wired, {"model": "gem", "input": "hi", name: "u1"})
        assert r.status_code == 200, r.text
        assert r.headers["x-conduit-dropped-params"] == name
    for empty in ({"include": []}, {"include": None}, {"prompt_cache_key": None, "tools": []}):
        r = await _post(wired, {"model": "gpt", "input": "hi", **empty})
        assert r.status_code == 200, r.text
        assert "x-conduit-dropped-params" not in r.headers, empty


async def test_every_function_call_needs_its_output(wired: Wired) -> None:
    call = {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"}
    answer = {"type": "function_call_output", "call_id": "c1", "output": "21"}
    asking = {"role": "user", "content": "Weather?"}
    ok = await _post(wired, {"model": "gpt", "input": [asking, call, answer], "tools": [WEATHER]})
    assert ok.status_code == 200, ok.text
    sent = wired.fake.requests[-1].body["messages"]
    assert sent[-1] == {"role": "tool", "tool_call_id": "c1", "content": "21"}
    # A previous response that ended with a call: its output must come next.
    async with wired.client() as client:
        asked = await client.responses.create(
            model="gpt", input="Weather in Paris?", tools=[WEATHER], tool_choice="required"
        )
    call_id = asked.output[-1].call_id  # type: ignore[union-attr]
    before = len(wired.fake.requests)
    r = await _post(
        wired, {"model": "gpt", "input": "Never mind.", "previous_response_id": asked.id}
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "input"
    assert error["message"] == f"No tool output found for function call {call_id}."
    assert len(wired.fake.requests) == before


@pytest.mark.parametrize(
    ("tool", "says"),
    [
        ({"type": "web_search"}, "run inside OpenAI's platform"),
        ({"type": "code_interpreter", "container": {"type": "auto"}}, "run inside OpenAI's"),
        ({"type": "custom", "name": "grep"}, "are not translated to chat completions"),
        ({"type": "local_shell"}, "are not translated to chat completions"),
    ],
)
async def test_tools_chat_cannot_carry_are_refused_truthfully(
    wired: Wired, tool: dict[str, Any], says: str
) -> None:
    r = await _post(wired, {"model": "claude", "input": "hi", "tools": [tool]})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "tools[0].type" and says in error["message"]
    assert "function tools" in error["message"]


async def test_usage_and_logs_as_for_chat(wired: Wired) -> None:
    async with wired.client() as client:
        await client.responses.create(model="gpt", input="hi")
    assert wired.gateway.ctx is not None
    await settled(wired.gateway)
    await wired.gateway.ctx.recorder.flush()
    logs = await wired.admin.logs()
    entry = logs["data"][0]
    assert entry["endpoint"] == "responses" and entry["model"] == "gpt"
    assert entry["prompt_tokens"] == PROMPT_TOKENS and entry["completion_tokens"] == 4
    assert entry["cost"] is not None and entry["cost"] > 0


async def test_input_tokens_counts_without_a_call(wired: Wired) -> None:
    before = len(wired.fake.requests)
    async with httpx2.AsyncClient(base_url=wired.gateway.url) as http:
        r = await http.post(
            "/v1/responses/input_tokens",
            json={"model": "gpt", "input": "word " * 40},
            headers={"Authorization": f"Bearer {wired.key}"},
        )
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "response.input_tokens" and r.json()["input_tokens"] >= 40
    assert len(wired.fake.requests) == before


async def test_input_tokens_refuses_what_a_response_would(wired: Wired) -> None:
    """The same body checks as POST /v1/responses, before anything is counted."""
    auth = {"Authorization": f"Bearer {wired.key}"}
    async with httpx2.AsyncClient(base_url=wired.gateway.url, headers=auth) as http:
        conversation = (await http.post("/v1/conversations", json={})).json()["id"]
        previous = (await http.post("/v1/responses", json={"model": "gpt", "input": "x"})).json()
        for body, param in (
            (
                {"conversation": conversation, "previous_response_id": previous["id"]},
                "conversation",
            ),
            ({"metadata": {"turn": 1}}, "metadata"),
        ):
            r = await http.post(
                "/v1/responses/input_tokens", json={"model": "gpt", "input": "hi", **body}
            )
            assert r.status_code == 400, r.text
            validate(r.json(), "ErrorResponse")
            assert r.json()["error"]["param"] == param


async def test_input_tokens_counts_only_for_a_model_the_key_may_use(wired: Wired) -> None:
    narrow = await wired.admin.create_key(name="narrow", allowed_models=["claude"])
    async with httpx2.AsyncClient(base_url=wired.gateway.url) as http:

        async def count(key: str, **body: Any) -> httpx2.Response:
            return await http.post(
                "/v1/responses/input_tokens",
                json={"input": "hi", **body},
                headers={"Authorization": f"Bearer {key}"},
            )

        missing = await count(wired.key, model="no-such-model")
        assert missing.status_code == 404 and missing.json()["error"]["param"] == "model"
        barred = await count(narrow["key"], model="gpt")
        assert barred.status_code == 403 and barred.json()["error"]["code"] == "model_not_allowed"
        # model is optional here (OpenAI's TokenCountsBody): the estimate needs none.
        assert (await count(wired.key)).status_code == 200
        assert (await count(narrow["key"], model="claude")).status_code == 200


async def test_ids_of_another_kind_are_named_and_long_ones_cut_short(wired: Wired) -> None:
    async with httpx2.AsyncClient(base_url=wired.gateway.url) as http:

        async def create(**body: Any) -> dict[str, Any]:
            r = await http.post(
                "/v1/responses",
                json={"model": "gpt", "input": "hi", **body},
                headers={"Authorization": f"Bearer {wired.key}"},
            )
            assert r.status_code in (400, 404), r.text
            error: dict[str, Any] = r.json()["error"]
            return error

        wrong = await create(previous_response_id="msg_abc")
        assert wrong["param"] == "previous_response_id" and "begins with 'resp'" in wrong["message"]
        other = await create(conversation="abc")
        assert other["param"] == "conversation" and "begins with 'conv'" in other["message"]
        long = await create(previous_response_id="resp_" + "x" * 5000)
        assert long["code"] == "previous_response_not_found" and len(long["message"]) < 200


async def _until_done(client: openai.AsyncOpenAI, response_id: str) -> Any:
    for _ in range(200):
        response = await client.responses.retrieve(response_id)
        if response.status not in ("queued", "in_progress"):
            return response
        await asyncio.sleep(0.02)
    raise AssertionError("the background response never finished")


async def test_background_runs_after_the_answer_and_is_read_back(wired: Wired) -> None:
    wired.fake.then(delay=0.3)
    async with wired.client() as client:
        queued = await client.responses.create(model="gpt", input="hi", background=True)
        assert queued.status == "queued" and queued.background is True
        assert queued.output == []
        done = await _until_done(client, queued.id)
    assert done.status == "completed" and done.output_text == "Hello from the fake"
    assert done.usage is not None and done.usage.output_tokens == 4
    await settled(wired.gateway)
    assert wired.gateway.ctx is not None
    await wired.gateway.ctx.recorder.flush()
    entry = (await wired.admin.logs())["data"][0]
    assert entry["endpoint"] == "responses" and entry["completion_tokens"] == 4


async def test_a_follow_up_of_a_response_still_running_is_refused(wired: Wired) -> None:
    wired.fake.then(delay=30)
    async with wired.client() as client:
        queued = await client.responses.create(model="gpt", input="hi", background=True)
        with pytest.raises(openai.BadRequestError) as caught:
            await client.responses.create(model="gpt", input="next", previous_response_id=queued.id)
        error: Any = caught.value.body  # the SDK's: the envelope's error
        validate({"error": error}, "ErrorResponse")
        assert error["param"] == "previous_response_id"
        assert error["code"] == "previous_response_in_progress"
        assert "in progress" in error["message"]
        # Over the WebSocket mode too (the same prior()).
        async with client.responses.connect() as conn:
            await conn.response.create(model="gpt", input="next", previous_response_id=queued.id)
            async for event in conn:
                assert event.type == "error" and event.status == 400
                assert event.error.code == "previous_response_in_progress"
                break
        await client.responses.cancel(queued.id)
    await settled(wired.gateway)
    assert wired.gateway.ctx is not None
    await wired.gateway.ctx.recorder.flush()
    logs = await wired.gateway.ctx.store.find("request_logs", {"endpoint": "responses"})
    # The background run's, and the refused follow-ups (HTTP, WebSocket): logged, at no cost.
    refused = [e for e in logs if e["status"] == 400]
    assert len(logs) == 3 and len(refused) == 2
    assert all(e["error_code"] == "previous_response_in_progress" for e in refused)
    assert not any(e.get("total_tokens") or e.get("cost") for e in refused)
    assert not any("next" in json.dumps(request.body) for request in wired.fake.requests)


async def test_cancel_stops_a_run_and_frees_its_parallel_slot(wired: Wired) -> None:
    key = (await wired.admin.create_key(name="one-at-a-time", max_parallel=1))["key"]
    wired.fake.then(delay=30)
    async with openai.AsyncOpenAI(
        base_url=wired.gateway.url + "/v1", api_key=key, max_retries=0
    ) as client:
        queued = await client.responses.create(model="gpt", input="hi", background=True)
        for _ in range(100):  # wait until the upstream call is under way
            if (
                len(wired.fake.requests)
                and (await client.responses.retrieve(queued.id)).status == "in_progress"
            ):
                break
            await asyncio.sleep(0.02)
        with pytest.raises(openai.RateLimitError):  # the run holds the key's one slot
            await client.responses.create(model="gpt", input="again")
        cancelled = await client.responses.cancel(queued.id)
        assert cancelled.status == "cancelled"
        await settled(wired.gateway)
        assert (await client.responses.retrieve(queued.id)).status == "cancelled"
        again = await client.responses.create(model="gpt", input="again")
        assert again.status == "completed"


async def test_cancel_refuses_a_response_that_was_not_in_the_background(wired: Wired) -> None:
    async with wired.client() as client:
        plain = await client.responses.create(model="gpt", input="hi")
        with pytest.raises(openai.BadRequestError):
            await client.responses.cancel(plain.id)


async def test_a_run_cut_short_by_a_stop_or_a_crash_ends_failed(
    wired_with: Any, start_gateway: GatewayFactory
) -> None:
    store = MemoryStore()
    wired = await wired_with(store=store)
    wired.fake.then(delay=30)
    async with wired.client() as client:
        queued = await client.responses.create(model="gpt", input="hi", background=True)
    for _ in range(100):
        if wired.fake.requests:
            break
        await asyncio.sleep(0.02)
    await wired.gateway.stop()  # a graceful stop: the run is told, and records it
    stored = await store.get("responses", queued.id)
    assert stored is not None
    doc = unpacked(stored)
    assert doc["status"] == "failed"
    assert "stopped" in doc["response"]["error"]["message"]

    # A gateway killed mid-run records nothing; the next read sees its runner is gone.
    await store.update(
        "responses",
        queued.id,
        {
            "status": "in_progress",
            "runner": "inst_gone",
            "response": packed({**doc["response"], "status": "in_progress", "error": None}),
        },
    )
    other = await start_gateway(store=store)  # the same store, its providers and keys
    async with openai.AsyncOpenAI(
        base_url=other.url + "/v1", api_key=wired.key, max_retries=0
    ) as client:
        seen = await client.responses.retrieve(queued.id)
    assert seen.status == "failed" and seen.error is not None


async def test_conversations_crud(wired: Wired) -> None:
    async with wired.client() as client:
        conv = await client.conversations.create(
            items=[{"type": "message", "role": "user", "content": "Remember: blue."}],
            metadata={"topic": "colours"},
        )
        assert conv.id.startswith("conv_") and conv.metadata == {"topic": "colours"}
        assert (await client.conversations.retrieve(conv.id)).id == conv.id
        updated = await client.conversations.update(conv.id, metadata={"topic": "paint"})
        assert updated.metadata == {"topic": "paint"}
        added = await client.conversations.items.create(
            conv.id,
            items=[
                {"type": "message", "role": "user", "content": "And red."},
                {"type": "message", "role": "assistant", "content": "Noted."},
            ],
        )
        assert len(added.data) == 2
        listed = await client.conversations.items.list(conv.id, order="asc")
        texts = [item.content[0].text for item in listed.data]  # type: ignore[union-attr]
        assert texts == ["Remember: blue.", "And red.", "Noted."]
        newest = await client.conversations.items.list(conv.id, limit=1)
        assert newest.has_more and newest.data[0].id == listed.data[-1].id
        after = await client.conversations.items.list(conv.id, limit=5, after=newest.data[0].id)
        assert [i.id for i in after.data] == [i.id for i in reversed(listed.data[:-1])]
        one = await client.conversations.items.retrieve(listed.data[0].id, conversation_id=conv.id)
        assert one.id == listed.data[0].id
        await client.conversations.items.delete(listed.data[0].id, conversation_id=conv.id)
        assert len((await client.conversations.items.list(conv.id)).data) == 2
        deleted = await client.conversations.delete(conv.id)
        assert deleted.deleted is True
        with pytest.raises(openai.NotFoundError):
            await client.conversations.retrieve(conv.id)
    assert wired.gateway.ctx is not None
    assert await wired.gateway.ctx.store.count("conversation_items", {}) == 0


async def test_responses_in_a_conversation_carry_and_grow_it(wired: Wired) -> None:
    async with wired.client() as client:
        conv = await client.conversations.create(
            items=[{"type": "message", "role": "user", "content": "My name is Ada."}]
        )
        first = await client.responses.create(model="claude", input="Hi!", conversation=conv.id)
        assert first.conversation is not None and first.conversation.id == conv.id
        async with client.responses.stream(
            model="gem", input="What is my name?", conversation={"id": conv.id}
        ) as stream:
            async for _ in stream:
                pass
        said = json.dumps(wired.fake.requests[-1].body)  # Gemini's contents: the whole story
        assert said.index("My name is Ada.") < said.index("Hi!") < said.index("What is my name?")
        items = await client.conversations.items.list(conv.id, order="asc")
    roles = [getattr(item, "role", None) for item in items.data]
    assert roles == ["user", "user", "assistant", "user", "assistant"]


async def test_a_conversation_refuses_an_output_without_its_call(wired: Wired) -> None:
    """Stored, an orphan function_call_output would make every response continuing the
    conversation fail: it is refused where it is added, naming the item."""
    orphan = {"type": "function_call_output", "call_id": "zz", "output": "x"}
    call = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}
    assert wired.gateway.ctx is not None
    store = wired.gateway.ctx.store
    auth = {"Authorization": f"Bearer {wired.key}"}
    async with httpx2.AsyncClient(base_url=wired.gateway.url, headers=auth) as http:
        refused = await http.post(
            "/v1/conversations", json={"items": [{"role": "user", "content": "hi"}, orphan]}
        )
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert error["param"] == "items[1]"
        assert error["message"] == "No tool call found for function call output with call_id zz."
        assert await store.count("conversations", {}) == 0
        # A call earlier in the same request answers it.
        made = await http.post(
            "/v1/conversations", json={"items": [call, {**orphan, "call_id": "c1"}]}
        )
        assert made.status_code == 200
        conv_id = made.json()["id"]
        held = await store.count("conversation_items", {})
        refused = await http.post(f"/v1/conversations/{conv_id}/items", json={"items": [orphan]})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "items[0]"
        assert await store.count("conversation_items", {}) == held
        # A call the conversation holds answers it.
        added = await http.post(
            f"/v1/conversations/{conv_id}/items", json={"items": [{**orphan, "call_id": "c1"}]}
        )
        assert added.status_code == 200
    async with wired.client() as client:
        answer = await client.responses.create(model="gpt", input="go on", conversation=conv_id)
        assert answer.status == "completed"


async def test_a_function_call_goes_only_after_its_output(wired: Wired) -> None:
    """Deleting a call whose output stays would leave that output orphaned, and every
    response continuing the conversation failing: refused, naming item_id. The output
    first, then the call, is fine."""
    call = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}
    output = {"type": "function_call_output", "call_id": "c1", "output": "x"}
    async with wired.client() as client:
        conv = await client.conversations.create()
        added = await client.conversations.items.create(
            conv.id, items=[call, output, {"type": "message", "role": "user", "content": "hi"}]
        )
        call_item, output_item = added.data[0].id, added.data[1].id
        with pytest.raises(openai.BadRequestError) as caught:
            await client.conversations.items.delete(call_item, conversation_id=conv.id)
        error: Any = caught.value.body
        assert error["param"] == "item_id"
        assert error["message"] == (
            f"Item '{call_item}' is a function call whose output ('{output_item}') is still "
            "in the conversation; delete the output first."
        )
        assert len((await client.conversations.items.list(conv.id)).data) == 3
        answer = await client.responses.create(model="gpt", input="go on", conversation=conv.id)
        assert answer.status == "completed"
        await client.conversations.items.delete(output_item, conversation_id=conv.id)
        await client.conversations.items.delete(call_item, conversation_id=conv.id)
        listed = await client.conversations.items.list(conv.id)
        assert {call_item, output_item}.isdisjoint(item.id for item in listed.data)
        answer = await client.responses.create(model="gpt", input="go on", conversation=conv.id)
        assert answer.status == "completed"


async def test_calls_stored_before_they_carried_their_id_get_it_at_start(
    wired_store: Wired, store: Store, start_gateway: GatewayFactory
) -> None:
    """Function calls and outputs stored before items carried their call id beside the
    text ("call", "output_of") are given it once, when a gateway starts on the store; no
    request reads a conversation's item texts to find a call or an output."""
    call = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}
    output = {"type": "function_call_output", "call_id": "c1", "output": "x"}
    auth = {"Authorization": f"Bearer {wired_store.key}"}
    async with httpx2.AsyncClient(base_url=wired_store.gateway.url, headers=auth) as http:
        conv_id = (await http.post("/v1/conversations", json={})).json()["id"]
        items = {"items": [call, output, {"role": "user", "content": "hi"}]}
        made = await http.post(f"/v1/conversations/{conv_id}/items", json=items)
        call_item = made.json()["data"][0]["id"]
    # As a store written before: no lookup fields, and the backfill never run on it.
    docs = await store.find("conversation_items", {"conversation": conv_id})
    assert [bool(d.get("call") or d.get("output_of")) for d in docs].count(True) == 2
    for doc in docs:
        await store.update("conversation_items", doc["_id"], unset=["call", "output_of"])
    assert await store.delete("migrations", "conversation_item_lookups")
    more = {"items": [output]}
    async with httpx2.AsyncClient(base_url=wired_store.gateway.url, headers=auth) as http:
        refused = await http.post(f"/v1/conversations/{conv_id}/items", json=more)
        assert refused.status_code == 400  # the item texts are not read for the call
    other = await start_gateway(store=store)
    async with httpx2.AsyncClient(base_url=other.url, headers=auth) as http:
        added = await http.post(f"/v1/conversations/{conv_id}/items", json=more)
        assert added.status_code == 200, added.text
        kept = await http.delete(f"/v1/conversations/{conv_id}/items/{call_item}")
        assert kept.status_code == 400 and kept.json()["error"]["param"] == "item_id"
    docs = await store.find("conversation_items", {"conversation": conv_id}, sort="seq")
    assert [(d.get("call"), d.get("output_of")) for d in docs] == [
        ("c1", None),
        (None, "c1"),
        (None, None),
        (None, "c1"),
    ]
    assert await store.get("migrations", "conversation_item_lookups") is not None


async def test_a_conversation_belongs_to_its_key(wired: Wired) -> None:
    other = (await wired.admin.create_key(name="other"))["key"]
    async with wired.client() as client:
        conv = await client.conversations.create()
        with pytest.raises(openai.BadRequestError):
            await client.responses.create(
                model="gpt", input="x", conversation=conv.id, previous_response_id="resp_x"
            )
    async with openai.AsyncOpenAI(
        base_url=wired.gateway.url + "/v1", api_key=other, max_retries=0
    ) as theirs:
        with pytest.raises(openai.NotFoundError):
            await theirs.conversations.retrieve(conv.id)
        with pytest.raises(openai.NotFoundError):
            await theirs.conversations.items.list(conv.id)
        with pytest.raises(openai.NotFoundError) as caught:
            await theirs.responses.create(model="gpt", input="x", conversation=conv.id)
        assert caught.value.body["param"] == "conversation"  # type: ignore[index]


async def _native(wired: Wired) -> None:
    """A model on a provider that serves the Responses API itself."""
    await wired.admin.create_provider(
        name="oai-native",
        type="openai",
        base_url=wired.fake.url + "/v1",
        api_key=API_KEY,
        options={"responses": "native"},
    )
    await wired.admin.create_model(
        name="gpt-native", deployments=[{"provider": "oai-native", "model": "gpt-4o"}]
    )


async def test_native_relay_keeps_what_only_openai_does(wired: Wired) -> None:
    await _native(wired)
    async with wired.client() as client:
        first = await client.responses.create(
            model="gpt-native",
            input="Find today's news.",
            tools=[{"type": "web_search"}],  # a hosted tool: only OpenAI's own API runs it
        )
        upstream = wired.fake.requests[-1]
        assert upstream.path == "/v1/responses" and upstream.body["model"] == "gpt-4o"
        assert upstream.body["tools"] == [{"type": "web_search"}]
        assert first.id.startswith("resp_") and not first.id.startswith("resp_up_")
        assert first.model == "gpt-native" and first.output_text == "Hello from the fake"
        assert first.usage is not None and first.usage.input_tokens == PROMPT_TOKENS
        assert first.usage.input_tokens_details.cached_tokens == 2
        second = await client.responses.create(
            model="gpt-native", input="And tomorrow?", previous_response_id=first.id
        )
        # The provider gets its own id for the previous response, and keeps the state.
        sent = wired.fake.requests[-1].body["previous_response_id"]
        assert sent.startswith("resp_up_") and sent in wired.fake.responses
        assert second.previous_response_id == first.id
        assert (await client.responses.retrieve(second.id)).output_text == "Hello from the fake"
        # A follow-up on another backend gets the history from the gateway instead.
        third = await client.responses.create(
            model="claude", input="Summarise.", previous_response_id=second.id
        )
    said = json.dumps(wired.fake.requests[-1].body)
    assert said.index("And tomorrow?") < said.index("Summarise.")
    assert third.output_text == "Hello from the fake"


async def test_native_stream_relayed_under_the_gateway_id(wired: Wired) -> None:
    await _native(wired)
    events = await _raw_events(wired, {"model": "gpt-native", "input": "Say hello"})
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = events[-1]
    assert final["type"] == "response.completed"
    ids = {e["response"]["id"] for e in events if "response" in e}
    assert len(ids) == 1 and not ids.pop().startswith("resp_up_")
    assert all(e["response"]["model"] == "gpt-native" for e in events if "response" in e)
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == "Hello from the fake"
    async with wired.client() as client:
        stored = await client.responses.retrieve(final["response"]["id"])
    assert stored.output_text == deltas and stored.usage is not None


async def test_a_native_stream_cut_part_way_ends_with_the_next_number(wired: Wired) -> None:
    """The failure that ends a relayed stream comes after the provider's last event."""
    await _native(wired)
    wired.fake.then(drop_after=5)
    # Not against the schema: the failure's error code (upstream_error) is the gateway's,
    # which OpenAI's enum of its own codes does not list.
    events = await _raw_events(wired, {"model": "gpt-native", "input": "Say hello"}, False)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert len(events) == 6 and events[-1]["type"] == "response.failed"


async def test_a_client_leaving_before_the_first_token_stops_the_call(wired: Wired) -> None:
    """A streamed request whose client leaves while the provider is silent ends at once,
    logged as abandoned, rather than when the provider answers."""
    wired.fake.then(delay=30)
    ctx = wired.gateway.ctx
    assert ctx is not None
    leaving = asyncio.ensure_future(_raw_events(wired, {"model": "gpt", "input": "hi"}))
    for _ in range(100):
        if wired.fake.requests:
            break
        await asyncio.sleep(0.02)
    leaving.cancel()  # the client leaves (its connection closes) before any event
    with contextlib.suppress(asyncio.CancelledError):
        await leaving
    for _ in range(100):
        if ctx.in_flight.requests == 0:
            break
        await asyncio.sleep(0.02)
    assert ctx.in_flight.requests == 0
    await ctx.recorder.flush()
    logs = await ctx.store.find("request_logs", {"endpoint": "responses"})
    assert [(e["status"], e["error_code"]) for e in logs] == [(499, "client_disconnected")]


async def test_native_failure_fails_over_to_a_translated_backend(wired: Wired) -> None:
    await _native(wired)
    await wired.admin.create_model(
        name="either",
        deployments=[
            {"provider": "oai-native", "model": "gpt-4o", "priority": 0},
            {"provider": "ant", "model": "claude-sonnet-4-5", "priority": 1},
        ],
    )
    wired.fake.then(status=500, for_model="gpt-4o")
    async with wired.client() as client:
        raw = await client.responses.with_raw_response.create(model="either", input="hi")
    assert raw.headers["x-conduit-provider"] == "ant"
    assert raw.parse().output_text == "Hello from the fake"


async def test_what_a_translation_leaves_out_is_named(wired: Wired) -> None:
    """x-conduit-dropped-params names, as the request named them, the fields chat has no
    place for and those the provider behind chat drops (Anthropic: temperature)."""
    body: dict[str, Any] = {
        "input": "hi",
        "temperature": 0.3,
        "max_output_tokens": 64,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "agent-7",
        "truncation": "auto",
        "reasoning": {"effort": "low", "summary": "auto"},
    }
    async with httpx2.AsyncClient(base_url=wired.gateway.url, timeout=30) as http:
        auth = {"Authorization": f"Bearer {wired.key}"}
        for stream in (False, True):
            r = await http.post(
                "/v1/responses",
                json={"model": "claude", **body, "stream": stream},
                headers=auth,
            )
            assert r.status_code == 200, r.text
            named = r.headers["x-conduit-dropped-params"].split(",")
            assert named[:4] == ["include", "prompt_cache_key", "truncation", "reasoning.summary"]
            assert "temperature" in named[4:] and "max_output_tokens" not in named
        sent = wired.fake.requests[-1].body
        assert "temperature" not in sent and sent["max_tokens"] == 64
        # A request that chat carries whole names nothing, and a native relay drops nothing.
        plain = await http.post(
            "/v1/responses", json={"model": "gpt", "input": "hi", "top_p": 0.5}, headers=auth
        )
        assert plain.status_code == 200 and "x-conduit-dropped-params" not in plain.headers
        await _native(wired)
        native = await http.post(
            "/v1/responses",
            json={"model": "gpt-native", **body},
            headers=auth,
        )
        assert native.status_code == 200, native.text
        assert "x-conduit-dropped-params" not in native.headers
        assert wired.fake.requests[-1].body["include"] == ["reasoning.encrypted_content"]


@pytest.mark.parametrize(
    "bad", ["\x00msg", "msg\u202etxt", "../../x", "x" * 65, "x" * 5000, "", 7, ["msg_1"]]
)
async def test_item_ids_are_checked_where_items_are_read(wired: Wired, bad: object) -> None:
    """A client's item id is part of the key its conversation stores the item under, and
    comes back in URLs and listings: anything but 1 to 64 of [A-Za-z0-9_-] is a 400 naming
    it, on every route that reads items, and nothing is stored or sent."""
    assert wired.gateway.ctx is not None
    store = wired.gateway.ctx.store
    before = len(wired.fake.requests)
    good = {"type": "message", "role": "user", "content": "hi", "id": "msg_ok-1"}
    item = {**good, "id": bad}
    auth = {"Authorization": f"Bearer {wired.key}"}
    async with httpx2.AsyncClient(base_url=wired.gateway.url, headers=auth) as http:
        conv_id = (await http.post("/v1/conversations", json={})).json()["id"]
        for path, body, param in (
            ("/v1/responses", {"model": "gpt", "input": [good, item]}, "input[1].id"),
            (
                "/v1/responses",
                {"model": "gpt", "input": [item], "conversation": conv_id},
                "input[0].id",
            ),
            ("/v1/conversations", {"items": [good, item]}, "items[1].id"),
            (f"/v1/conversations/{conv_id}/items", {"items": [item]}, "items[0].id"),
        ):
            r = await http.post(path, json=body)
            assert r.status_code == 400, (path, r.text)
            validate(r.json(), "ErrorResponse")
            assert r.json()["error"]["param"] == param
    assert len(wired.fake.requests) == before
    assert await store.count("conversation_items", {}) == 0
    assert await store.count("conversations", {}) == 1
    assert await store.count("responses", {}) == 0


async def test_an_item_id_is_new_or_refused_before_anything_is_written(wired: Wired) -> None:
    """Ids are unique within a conversation: one it holds already, or two alike in one
    request, is a 400 naming the item, found before any write or model call, so nothing
    is half-written or billed. Another conversation may hold the same id."""
    assert wired.gateway.ctx is not None
    store = wired.gateway.ctx.store

    def msg(item_id: str, text: str = "x") -> dict[str, str]:
        return {"type": "message", "role": "user", "content": text, "id": item_id}

    auth = {"Authorization": f"Bearer {wired.key}"}
    async with httpx2.AsyncClient(base_url=wired.gateway.url, headers=auth) as http:
        made = await http.post("/v1/conversations", json={"items": [msg("msg_dup")]})
        conv_id = made.json()["id"]
        items_url = f"/v1/conversations/{conv_id}/items"
        held = await store.count("conversation_items", {})
        before = len(wired.fake.requests)
        for path, body, param in (
            (items_url, {"items": [msg("msg_dup")]}, "items[0].id"),
            (items_url, {"items": [msg("msg_new"), msg("msg_dup")]}, "items[1].id"),
            (items_url, {"items": [msg("msg_two"), msg("msg_two")]}, "items[1].id"),
            ("/v1/conversations", {"items": [msg("msg_a"), msg("msg_a")]}, "items[1].id"),
            (
                "/v1/responses",
                {"model": "gpt", "conversation": conv_id, "input": [msg("msg_dup")]},
                "input[0].id",
            ),
            (
                "/v1/responses",
                {"model": "gpt", "input": [msg("msg_b"), msg("msg_b", "y")]},
                "input[1].id",
            ),
        ):
            for stream in (False, True):  # a stream refuses before its first event too
                if stream and path != "/v1/responses":
                    continue
                r = await http.post(path, json={**body, **({"stream": True} if stream else {})})
                assert r.status_code == 400, (body, r.text)
                validate(r.json(), "ErrorResponse")
                assert r.json()["error"]["param"] == param, body
        assert len(wired.fake.requests) == before  # no model was called
        assert await store.count("conversation_items", {}) == held
        assert await store.count("conversations", {}) == 1
        assert await store.count("responses", {}) == 0
        listed = (await http.get(items_url)).json()["data"]
        assert [item["id"] for item in listed] == ["msg_dup"]
        # Fresh ids go in, the user's message with the reply; another conversation may
        # use an id this one holds.
        answered = await http.post(
            "/v1/responses",
            json={"model": "gpt", "conversation": conv_id, "input": [msg("msg_next")]},
        )
        assert answered.status_code == 200, answered.text
        listed = (await http.get(items_url, params={"order": "asc"})).json()["data"]
        assert [item["id"] for item in listed][:2] == ["msg_dup", "msg_next"]
        assert [item["role"] for item in listed] == ["user", "user", "assistant"]
        other = await http.post("/v1/conversations", json={"items": [msg("msg_dup")]})
        assert other.status_code == 200, other.text


async def test_refusals_are_in_the_request_log(wired: Wired) -> None:
    """A refused POST /v1/responses is logged with its status and code, as chat's are:
    bad parameters, and what is continued being missing. A bad model name is still its
    own 404."""
    assert wired.gateway.ctx is not None
    auth = {"Authorization": f"Bearer {wired.key}"}
    refusals: list[tuple[dict[str, Any], int, str | None]] = [
        ({"temperature": 3}, 400, "invalid_value"),
        ({"store": "yes"}, 400, "invalid_type"),
        ({"metadata": {"turn": 1}}, 400, None),
        ({"previous_response_id": "resp_missing"}, 404, "previous_response_not_found"),
        ({"conversation": "conv_missing"}, 404, "conversation_not_found"),
        ({"model": "no-such-model", "temperature": 3}, 404, "model_not_found"),
        # Its in-process run refuses it, and is what logs it: once.
        ({"background": True, "stream": True, "temperature": 3}, 400, "invalid_value"),
    ]
    async with httpx2.AsyncClient(base_url=wired.gateway.url, headers=auth) as http:
        for body, status, code in refusals:
            r = await http.post("/v1/responses", json={"model": "gpt", "input": "hi", **body})
            assert r.status_code == status, r.text
            assert r.json()["error"]["code"] == code
    await settled(wired.gateway)
    await wired.gateway.ctx.recorder.flush()
    logs = await wired.gateway.ctx.store.find("request_logs", {"endpoint": "responses"})
    logged = sorted((e["status"], e["error_code"] or "") for e in logs)
    assert logged == sorted((status, code or "") for _, status, code in refusals)
    assert not any(e.get("total_tokens") or e.get("cost") for e in logs)


async def test_items_relayed_as_sent_have_their_ids_checked_too(wired: Wired) -> None:
    """Items only a native provider takes are kept as sent, but not a bad or repeated id:
    the same 400 as for the items the gateway reads, before the provider is called."""
    await _native(wired)
    before = len(wired.fake.requests)
    hosted = {"type": "web_search_call", "status": "completed", "action": {"type": "search"}}
    for items, param in (
        ([{**hosted, "id": "../ws"}], "input[0].id"),
        ([{**hosted, "id": "ws_1"}, {**hosted, "id": "ws_1"}], "input[1].id"),
        ([{**hosted, "id": "ws_1"}, {"role": "user", "content": "x", "id": "ws_1"}], "input[1].id"),
    ):
        r = await _post(wired, {"model": "gpt-native", "input": items})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == param
    assert len(wired.fake.requests) == before
