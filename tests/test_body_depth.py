"""Bodies nested deeper than the gateway can encode again (api/base.py MAX_BODY_DEPTH):
refused at once, before a provider is called or anything is stored, on every route that
reads a JSON body and on the Responses WebSocket; bodies just inside the limit pass."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest

from conduit_tornado.api.base import MAX_BODY_DEPTH
from tests.proxy_setup import Wired
from tests.test_responses_socket import _socket

pytestmark = pytest.mark.asyncio


def _schema(depth: int) -> dict[str, Any]:
    """A JSON schema whose properties nest ``depth`` objects deep."""
    schema: dict[str, Any] = {"type": "string"}
    while depth > 2:
        schema = {"type": "object", "properties": {"a": schema}}
        depth -= 2
    return schema


def _format(depth: int) -> dict[str, Any]:
    # The body's own levels above the schema: the body, text and its format.
    return {"format": {"type": "json_schema", "name": "s", "schema": _schema(depth - 3)}}


@pytest.mark.parametrize("route", ["responses", "chat"])
async def test_a_body_nested_too_deep_is_refused_before_the_provider(
    wired: Wired, route: str
) -> None:
    before = len(wired.fake.requests)
    async with httpx2.AsyncClient(base_url=wired.gateway.url, timeout=30) as http:

        async def post(depth: int) -> httpx2.Response:
            if route == "responses":
                body: dict[str, Any] = {"model": "gpt", "input": "x", "text": _format(depth)}
                return await http.post(
                    "/v1/responses", json=body, headers={"Authorization": f"Bearer {wired.key}"}
                )
            fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": _schema(depth)}}
            body = {"model": "gpt", "messages": [{"role": "user", "content": "x"}]}
            return await http.post(
                "/v1/chat/completions",
                json={**body, "response_format": fmt},
                headers={"Authorization": f"Bearer {wired.key}"},
            )

        deep = await post(300)  # deeper than orjson writes (255), shallower than it reads
        assert deep.status_code == 400, deep.text
        assert str(MAX_BODY_DEPTH) in deep.json()["error"]["message"]
        assert deep.json()["error"]["param"] == (
            "text" if route == "responses" else "response_format"
        )
        assert len(wired.fake.requests) == before  # no provider call
        fine = await post(MAX_BODY_DEPTH - 20)
        assert fine.status_code == 200, fine.text
    assert wired.gateway.ctx is not None
    stored = await wired.gateway.ctx.store.count("responses", {})
    assert stored == (1 if route == "responses" else 0)  # only the one inside the limit


async def test_the_socket_refuses_a_deep_event_and_goes_on(wired: Wired) -> None:
    async with _socket(wired) as socket:
        await socket.ws.send(
            json.dumps(
                {"type": "response.create", "model": "mock", "input": "x", "text": _format(300)}
            )
        )
        error = await socket.until(None, ("error",))
        assert error["status"] == 400 and str(MAX_BODY_DEPTH) in error["error"]["message"]
        assert error["error"]["param"] == "text"
        done = await socket.turn(input="still here?")
        assert done["type"] == "response.completed"
