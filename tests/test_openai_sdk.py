"""The official openai SDK against the gateway."""

from __future__ import annotations

import json

import openai
import pytest

from conduit_tornado import AdminClient, Gateway
from tests.openai_schemas import validate

pytestmark = pytest.mark.asyncio


async def test_sdk_lists_and_retrieves_models(gateway: Gateway, admin: AdminClient) -> None:
    await admin.create_provider(name="p", type="mock")
    for name in ("m-one", "m-two", "hidden"):
        await admin.create_model(name=name, deployments=[{"provider": "p", "model": "x"}])
    key = (await admin.create_key(name="sdk", allowed_models=["m-*"]))["key"]
    async with openai.AsyncOpenAI(
        base_url=gateway.url + "/v1", api_key=key, max_retries=0
    ) as client:
        raw = await client.models.with_raw_response.list()
        validate(json.loads(raw.content), "ListModelsResponse")
        models = [m async for m in client.models.list()]
        assert [m.id for m in models] == ["m-one", "m-two"]
        assert all(
            m.object == "model" and m.owned_by == "conduit" and m.created > 0 for m in models
        )
        one = await client.models.retrieve("m-two")
        validate(one.model_dump(), "Model")
        assert one.id == "m-two"
        with pytest.raises(openai.NotFoundError) as info:
            await client.models.retrieve("hidden")
        assert info.value.code == "model_not_found"
        validate(
            info.value.body if "error" in (info.value.body or {}) else {"error": info.value.body},
            "ErrorResponse",
        )
    async with openai.AsyncOpenAI(
        base_url=gateway.url + "/v1", api_key="condt_wrong", max_retries=0
    ) as bad:
        with pytest.raises(openai.AuthenticationError) as auth:
            await bad.models.list()
        assert auth.value.code == "invalid_api_key"
