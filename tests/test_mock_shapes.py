"""The mock provider answers in the shape a request asks for: JSON mode, a JSON schema
(the SDKs' ``parse`` helpers), function tools; names what it ignores; realtime text-only
responses carry no audio."""

from __future__ import annotations

import base64
import json
from enum import StrEnum
from typing import Any, Literal

import httpx2
import jsonschema
import openai
import pytest
import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field
from websockets.asyncio.client import connect

from conduit_tornado import AdminClient, Gateway
from conduit_tornado.routing.providers import mock_shapes
from tests.conftest import MASTER_KEY, GatewayFactory

HI = [{"role": "user", "content": "Plan a trip"}]
FORMATS = jsonschema.FormatChecker()  # formats are checked too, not only annotations


class Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


class Stop(BaseModel):
    city: str = Field(min_length=6)
    nights: int = Field(ge=2, le=9)
    rating: float = Field(gt=3.5)


class Trip(BaseModel):
    title: str
    budget_usd: float
    confirmed: bool
    colour: Colour
    mode: Literal["train", "plane"]
    stops: list[Stop] = Field(min_length=2)
    starts: str = Field(json_schema_extra={"format": "date-time"})
    note: str | None
    tags: list[str]


class Env:
    def __init__(self, gw: Gateway, key: str) -> None:
        self.gw, self.key = gw, key

    def client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.gw.url + "/v1", api_key=self.key, max_retries=0)

    async def chat(self, **body: Any) -> httpx2.Response:
        async with httpx2.AsyncClient(base_url=self.gw.url) as http:
            return await http.post(
                "/v1/chat/completions",
                json={"model": "m", "messages": HI, **body},
                headers={"Authorization": f"Bearer {self.key}"},
            )


@pytest_asyncio.fixture
async def env(start_gateway: GatewayFactory) -> Env:
    gw = await start_gateway()
    async with AdminClient(gw.url, MASTER_KEY) as admin:
        await admin.create_provider(name="mock", type="mock")
        await admin.create_model(name="m", deployments=[{"provider": "mock", "model": "mock-1"}])
        return Env(gw, (await admin.create_key(name="shapes"))["key"])


@pytest.mark.asyncio
async def test_chat_completions_parse_on_the_mock(env: Env) -> None:
    async with env.client() as client:
        done = await client.chat.completions.parse(model="m", messages=HI, response_format=Trip)
    trip = done.choices[0].message.parsed
    assert isinstance(trip, Trip)  # the SDK validated it against the model
    assert len(trip.stops) == 2 and all(s.nights >= 2 and s.rating > 3.5 for s in trip.stops)
    assert trip.colour is Colour.RED and trip.mode == "train"


@pytest.mark.asyncio
async def test_responses_parse_on_the_mock(env: Env) -> None:
    async with env.client() as client:
        done = await client.responses.parse(model="m", input="Plan a trip", text_format=Trip)
    assert isinstance(done.output_parsed, Trip)
    assert len(done.output_parsed.stops[0].city) >= 6


STOP = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"type": "string"}}},  # nothing required
        {"type": "string", "format": "email"},
        {"type": "string", "minLength": 12, "maxLength": 12},
        {"type": "integer", "minimum": 7, "multipleOf": 5},
        {"type": "integer", "maximum": -3},
        {"type": "number", "exclusiveMinimum": 0, "maximum": 0.5},
        {"type": "number", "minimum": 2.5, "multipleOf": 0.5},
        {"type": ["null", "boolean"]},
        {"enum": [3, "x"]},
        {"const": {"k": [1]}},
        {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 1}]},
        {"oneOf": [{"type": "string", "format": "uuid"}, {"type": "integer"}]},
        {"allOf": [STOP, {"properties": {"m": {"type": "boolean"}}, "required": ["m"]}]},
        {"type": "array", "prefixItems": [{"const": 1}, {"type": "string"}], "minItems": 2},
        {
            "type": "object",
            "$defs": {"Stop": STOP},
            "properties": {"stops": {"type": "array", "items": {"$ref": "#/$defs/Stop"}}},
            "required": ["stops"],
        },
        {  # recursive, but the self-reference is optional: it ends
            "$defs": {
                "Node": {
                    "type": "object",
                    "properties": {"next": {"$ref": "#/$defs/Node"}, "v": {"type": "number"}},
                    "required": ["v"],
                }
            },
            "$ref": "#/$defs/Node",
        },
    ],
)
@pytest.mark.asyncio
async def test_json_schema_answers_are_valid_instances(env: Env, schema: dict[str, Any]) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    r = await env.chat(response_format=fmt)
    assert r.status_code == 200, r.text
    content = r.json()["choices"][0]["message"]["content"]
    jsonschema.validate(json.loads(content), schema, format_checker=FORMATS)
    assert "x-conduit-dropped-params" not in r.headers


@pytest.mark.asyncio
async def test_json_mode_and_what_the_mock_ignores(env: Env) -> None:
    r = await env.chat(response_format={"type": "json_object"}, temperature=0.2, seed=3)
    assert r.status_code == 200
    assert isinstance(json.loads(r.json()["choices"][0]["message"]["content"]), dict)
    assert r.headers["x-conduit-dropped-params"] == "seed,temperature"
    # Keys that are no parameter's name are left out: a header holds no control characters.
    odd = await env.chat(**{"\x19\U00105989": 1, "a b": 2, "x" * 65: 3, "top_k": 4})
    assert odd.status_code == 200 and odd.headers["x-conduit-dropped-params"] == "top_k"


@pytest.mark.parametrize(
    ("schema", "why"),
    [
        (  # a required self-reference has no finite instance
            {
                "$defs": {
                    "N": {
                        "type": "object",
                        "properties": {"n": {"$ref": "#/$defs/N"}},
                        "required": ["n"],
                    }
                },
                "$ref": "#/$defs/N",
            },
            "deeper than 32",
        ),
        ({"type": "array", "items": {"type": "string"}, "minItems": 10**9}, "more than 10000"),
        (
            {"type": "array", "items": {"type": "string", "minLength": 50}, "minItems": 5000},
            "more than 100000 characters",
        ),
        ({"$ref": "#/$defs/Missing"}, "points nowhere"),
        ({"$ref": "https://example.com/schema.json"}, "only local $ref"),
    ],
)
@pytest.mark.asyncio
async def test_schemas_without_a_small_instance_are_refused(
    env: Env, schema: dict[str, Any], why: str
) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    r = await env.chat(response_format=fmt)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert why in error["message"] and error["param"] == "response_format.json_schema.schema"


WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["c", "f"]},
        "days": {"type": "integer", "minimum": 1},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "noop"}},
]


@pytest.mark.asyncio
async def test_tools_are_called_with_valid_arguments(env: Env) -> None:
    r = await env.chat(tools=TOOLS)  # auto: the first tool
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER)

    named = await env.chat(
        tools=TOOLS, tool_choice={"type": "function", "function": {"name": "noop"}}
    )
    (call,) = named.json()["choices"][0]["message"]["tool_calls"]
    assert call["function"] == {"name": "noop", "arguments": "{}"}

    # After the tool's result, auto answers in text (an agent loop ends); required calls.
    answered = [
        *HI,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny"},
    ]
    text = (await env.chat(messages=answered, tools=TOOLS)).json()["choices"][0]
    assert text["finish_reason"] == "stop" and text["message"]["content"]
    again = await env.chat(messages=answered, tools=TOOLS, tool_choice="required")
    assert again.json()["choices"][0]["finish_reason"] == "tool_calls"
    none = await env.chat(tools=TOOLS, tool_choice="none")
    assert "tool_calls" not in none.json()["choices"][0]["message"]

    wrong = await env.chat(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "x"}})
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "tool_choice"


@pytest.mark.asyncio
async def test_a_streamed_tool_call_adds_up_to_the_whole(env: Env) -> None:
    async with env.client() as client:
        stream = await client.chat.completions.create(
            model="m",
            messages=HI,
            tools=TOOLS,
            stream=True,  # type: ignore[arg-type]
        )
        names, arguments, finish = [], "", None
        async for chunk in stream:
            for choice in chunk.choices:
                for delta in choice.delta.tool_calls or []:
                    assert delta.index == 0
                    if delta.function and delta.function.name:
                        names.append(delta.function.name)
                    arguments += (delta.function.arguments or "") if delta.function else ""
                finish = choice.finish_reason or finish
    assert names == ["get_weather"] and finish == "tool_calls"
    jsonschema.validate(json.loads(arguments), WEATHER)


@pytest.mark.asyncio
async def test_responses_tools_on_the_mock(env: Env) -> None:
    async with env.client() as client:
        done = await client.responses.create(
            model="m",
            input="Weather?",
            tools=[{"type": "function", "name": "get_weather", "parameters": WEATHER}],
        )
    (call,) = [item for item in done.output if item.type == "function_call"]
    assert call.name == "get_weather"
    jsonschema.validate(json.loads(call.arguments), WEATHER)


@pytest.mark.parametrize("where", ["session", "response"])
@pytest.mark.asyncio
async def test_realtime_text_only_responses_carry_no_audio(
    start_gateway: GatewayFactory, where: str
) -> None:
    gw = await start_gateway()
    async with AdminClient(gw.url, MASTER_KEY) as admin:
        await admin.create_provider(name="mock", type="mock")
        await admin.create_model(name="rt", deployments=[{"provider": "mock", "model": "rt"}])
        key = (await admin.create_key(name="rt"))["key"]
    url = f"ws://127.0.0.1:{gw.port}/v1/realtime?model=rt"
    text_only = {"output_modalities": ["text"]}
    async with connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        if where == "session":
            await ws.send(json.dumps({"type": "session.update", "session": text_only}))
        await ws.send(
            json.dumps(
                {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"1").decode()}
            )
        )
        create: dict[str, Any] = {"type": "response.create"}
        if where == "response":
            create["response"] = text_only
        await ws.send(json.dumps(create))
        kinds = []
        while not kinds or kinds[-1] != "response.done":
            event = json.loads(await ws.recv())
            kinds.append(event["type"])
            if event["type"] == "response.done":
                details = event["response"]["usage"]["output_token_details"]
        assert "response.output_text.delta" in kinds
        assert not any("audio" in k for k in kinds), kinds
        assert details["audio_tokens"] == 0
        # Without the setting (another response on a fresh socket), audio as before.
    async with connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        await ws.send(json.dumps({"type": "response.create"}))
        kinds = []
        while not kinds or kinds[-1] != "response.done":
            kinds.append(json.loads(await ws.recv())["type"])
        assert "response.output_audio.delta" in kinds


def _schemas() -> st.SearchStrategy[dict[str, Any]]:
    """Satisfiable schemas of every kind the mock builds, nested."""
    ints = st.integers(-50, 50)
    step = st.integers(1, 7)
    leaves = st.one_of(
        st.builds(
            lambda n, k: {"type": "integer", "minimum": n, "maximum": n + 2 * k, "multipleOf": k},
            ints,
            step,
        ),
        st.builds(lambda n: {"type": "integer", "exclusiveMaximum": n}, ints),
        st.builds(
            lambda a, b: {
                "type": "number",
                "exclusiveMinimum": min(a, b),
                "maximum": max(a, b) + 1,
            },
            ints,
            ints,
        ),
        st.builds(
            lambda a, b: {"type": "string", "minLength": min(a, b), "maxLength": max(a, b)},
            st.integers(0, 20),
            st.integers(0, 20),
        ),
        st.sampled_from([{"type": "string", "format": f} for f in ("date-time", "email", "uuid")]),
        st.builds(lambda v: {"enum": v}, st.lists(st.integers() | st.text(), min_size=1)),
        st.just({"type": "boolean"}),
        st.just({"type": "null"}),
        st.just({}),
    )

    def nest(inner: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
        props = st.dictionaries(st.text("abcxyz", min_size=1, max_size=4), inner, max_size=4)
        return st.one_of(
            st.builds(
                lambda p, some: {
                    "type": "object",
                    "properties": p,
                    "required": sorted(p)[: len(p) if some else 0],
                },
                props,
                st.booleans(),
            ),
            st.builds(
                lambda i, n: {"type": "array", "items": i, "minItems": n}, inner, st.integers(0, 3)
            ),
            st.builds(lambda a, b: {"anyOf": [{"type": "null"}, a, b]}, inner, inner),
            st.builds(
                lambda t: {**t, "type": [t["type"], "null"]},
                inner.filter(lambda t: isinstance(t.get("type"), str) and t["type"] != "null"),
            ),
        )

    return st.recursive(leaves, nest, max_leaves=20)


# Hypothesis describes each built schema for its report; a large nested one trips its
# "overly large repr" warning (an error here), which says nothing about the mock.
@pytest.mark.filterwarnings("ignore:Generating overly large repr")
@settings(max_examples=300, deadline=None)
@given(_schemas())
def test_every_instance_is_valid_against_its_schema(schema: dict[str, Any]) -> None:
    jsonschema.validate(mock_shapes.instance(schema, "x"), schema, format_checker=FORMATS)
