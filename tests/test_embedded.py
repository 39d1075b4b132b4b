"""conduit_tornado.start(): a gateway on the caller's running loop."""

from __future__ import annotations

import openai
import pytest

import conduit_tornado
from tests.conftest import free_port

pytestmark = pytest.mark.asyncio


async def test_start_call_and_stop(mongo_uri: str) -> None:
    port = free_port()
    gw = await conduit_tornado.start(
        port=port,
        config={
            "providers": [{"name": "mock", "type": "mock"}],
            "models": [{"name": "demo", "deployments": [{"provider": "mock", "model": "m"}]}],
        },
    )
    try:
        assert gw.url == f"http://127.0.0.1:{port}" and gw.base_url.endswith("/v1")
        key = (await gw.admin.create_key(name="nb"))["key"]
        async with openai.AsyncOpenAI(base_url=gw.base_url, api_key=key) as client:
            answer = await client.chat.completions.create(
                model="demo", messages=[{"role": "user", "content": "hi"}]
            )
        assert answer.choices[0].message.content == "Mock reply: hi"
        with pytest.raises(RuntimeError, match="already in use"):
            await conduit_tornado.start(port=port)
    finally:
        await gw.stop()
    again = await conduit_tornado.start(port=port, store=mongo_uri, mongodb_database="t_embedded")
    assert again.store.kind == "mongodb"
    await again.stop()
    with pytest.raises(ValueError, match="store must be"):
        await conduit_tornado.start(port=free_port(), store="sqlite://nope")
