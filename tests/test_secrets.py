"""Secrets appear exactly once (the creation response) and never in logs or later responses."""

from __future__ import annotations

import logging

import httpx2
import pytest

from conduit_tornado import AdminClient, Gateway
from tests.conftest import MASTER_KEY

pytestmark = pytest.mark.asyncio


async def test_no_secret_after_creation_nor_in_logs(
    gateway: Gateway,
    admin: AdminClient,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    provider_secret = "sk-upstream-SECRET-abc123"
    await admin.create_provider(
        name="up", type="openai", base_url="https://x.test/v1", api_key=provider_secret
    )
    await admin.create_model(name="m", deployments=[{"provider": "up", "model": "gpt"}])
    created = await admin.create_key(name="k")
    key = created["key"]
    rotated = (await admin.rotate_key(created["id"]))["key"]
    seen: list[str] = []
    async with httpx2.AsyncClient(base_url=gateway.url) as http:
        auth = {"Authorization": f"Bearer {rotated}"}
        master = {"Authorization": f"Bearer {MASTER_KEY}"}
        seen.append((await http.get("/v1/models", headers=auth)).text)
        seen.append((await http.get("/v1/models/m", headers=auth)).text)
        seen.append((await http.get("/v1/models", headers={"Authorization": f"Bearer {key}"})).text)
        seen.append((await http.get("/v1/nowhere", headers=auth)).text)
        for path in (
            "/admin/v1/keys",
            f"/admin/v1/keys/{created['id']}",
            "/admin/v1/providers",
            "/admin/v1/providers/up",
            "/admin/v1/models",
        ):
            seen.append((await http.get(path, headers=master)).text)
        seen.append(
            (
                await http.patch(f"/admin/v1/keys/{created['id']}", json={"rpm": 5}, headers=master)
            ).text
        )
    out, err = capfd.readouterr()
    haystack = "\n".join([*seen, caplog.text, out, err])
    for secret in (key, rotated, provider_secret, MASTER_KEY):
        assert secret not in haystack
    # The stored key record holds a hash, not the key.
    assert gateway.ctx is not None
    raw = await gateway.ctx.store.get("keys", created["id"])
    assert raw is not None and rotated not in repr(raw) and key not in repr(raw)


async def test_tokens_in_query_strings_are_redacted_from_the_access_log(
    gateway: Gateway, admin: AdminClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tornado.access")
    key = (await admin.create_key(name="k"))["key"]
    async with httpx2.AsyncClient(base_url=gateway.url) as http:
        await http.get("/v1/realtime/sessions/sess_x/ws", params={"token": key, "other": "visible"})
        await http.get("/v1/models", params={"api-key": key})
    assert key not in caplog.text
    assert "token=[redacted]" in caplog.text and "other=visible" in caplog.text
