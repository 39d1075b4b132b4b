"""The GA realtime flow: a client secret minted by a key, used once by a browser or the SDK."""

from __future__ import annotations

import json

import openai
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import settled
from tests.realtime_setup import RT, recv

pytestmark = pytest.mark.asyncio


def _client(env: RT, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=env.gw.url + "/v1", api_key=key, max_retries=0)


async def test_a_client_secret_opens_one_session_and_is_charged_to_its_key(rt: RT) -> None:
    async with _client(rt, rt.key) as client:
        minted = await client.realtime.client_secrets.create(
            session={"type": "realtime", "model": "rt", "instructions": "Be a fox."},
            expires_after={"anchor": "created_at", "seconds": 120},
        )
    assert minted.value.startswith("ek_") and minted.session.type == "realtime"
    assert minted.session.model == "rt" and minted.session.instructions == "Be a fox."  # type: ignore[union-attr]
    stored = await rt.gw.ctx.store.get("realtime_sessions", minted.session.id)  # type: ignore[union-attr]
    assert stored is not None and minted.value not in json.dumps(stored, default=str)

    # The SDK's own connect, with the secret where a key would go.
    async with (
        _client(rt, minted.value) as browser,
        browser.realtime.connect(model="rt") as conn,
    ):
        created = await conn.recv()
        assert created.type == "session.created"
        updated = await conn.recv()
        assert updated.type == "session.updated"
        assert updated.session.instructions == "Be a fox."  # type: ignore[union-attr]
        await conn.send({"type": "response.create"})
        async for event in conn:
            if event.type == "response.done":
                break
    sent = rt.fake.conns[-1].events[0]
    assert sent["type"] == "session.update" and sent["session"]["type"] == "realtime"

    # Single use: the same secret cannot open a second session.
    with pytest.raises(InvalidStatus) as again:
        async with connect(
            f"ws://127.0.0.1:{rt.gw.port}/v1/realtime?model=rt",
            additional_headers={"Authorization": f"Bearer {minted.value}"},
        ):
            pass
    assert again.value.response.status_code == 401
    await settled(rt.gw)
    logs = (await rt.admin.logs())["data"]
    assert any(entry["key_id"] == rt.key_id and entry["endpoint"] == "realtime" for entry in logs)


async def test_a_secret_is_bound_to_its_model_and_expires(rt: RT) -> None:
    async with _client(rt, rt.key) as client:
        minted = await client.realtime.client_secrets.create(
            session={"type": "realtime", "model": "rt"}
        )
        with pytest.raises(openai.BadRequestError) as short:
            await client.realtime.client_secrets.create(
                session={"type": "realtime", "model": "rt"},
                expires_after={"anchor": "created_at", "seconds": 5},
            )
        assert short.value.body["param"] == "expires_after"  # type: ignore[index]
        with pytest.raises(openai.BadRequestError) as kind:
            await client.realtime.client_secrets.create(
                session={"type": "translation"}  # type: ignore[typeddict-item]
            )
        assert kind.value.body["param"] == "session.type"  # type: ignore[index]
    with pytest.raises(InvalidStatus) as other_model:
        async with connect(
            f"ws://127.0.0.1:{rt.gw.port}/v1/realtime?model=rt-azure",
            additional_headers={"Authorization": f"Bearer {minted.value}"},
        ):
            pass
    assert other_model.value.response.status_code == 403
    forged = minted.value[:-4] + "AAAA"
    with pytest.raises(InvalidStatus) as bad:
        async with connect(
            f"ws://127.0.0.1:{rt.gw.port}/v1/realtime?model=rt",
            additional_headers={"Authorization": f"Bearer {forged}"},
        ):
            pass
    assert bad.value.response.status_code == 401
    async with connect(  # from a browser: the secret in the subprotocol, as OpenAI's docs show
        f"ws://127.0.0.1:{rt.gw.port}/v1/realtime?model=rt",
        subprotocols=["realtime", f"openai-insecure-api-key.{minted.value}"],  # type: ignore[list-item]
    ) as ws:
        events = await recv(ws, "session.created")
        assert events[-1]["type"] == "session.created"
