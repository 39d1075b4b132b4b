"""Who may call what: the auth matrix on client and admin routes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx2
import pytest

from conduit_tornado import AdminClient, Gateway
from tests.conftest import MASTER_KEY, GatewayFactory

pytestmark = pytest.mark.asyncio


async def _setup(admin: AdminClient, **key_fields: object) -> str:
    await admin.create_provider(name="p", type="mock")
    await admin.create_model(name="gpt-a", deployments=[{"provider": "p", "model": "m"}])
    await admin.create_model(name="claude-b", deployments=[{"provider": "p", "model": "m"}])
    created = await admin.create_key(name="k", **key_fields)
    return str(created["key"])


async def _get(gw: Gateway, path: str, headers: dict[str, str]) -> httpx2.Response:
    async with httpx2.AsyncClient(base_url=gw.url) as http:
        return await http.get(path, headers=headers)


def _assert_401(r: httpx2.Response) -> None:
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"
    assert r.headers["content-type"].startswith("application/json")


async def test_missing_malformed_and_wrong_keys(gateway: Gateway, admin: AdminClient) -> None:
    key = await _setup(admin)
    wrong = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    for headers in (
        {},
        {"Authorization": "Bearer"},
        {"Authorization": f"Basic {key}"},
        {"Authorization": key},
        {"Authorization": f"Bearer {wrong}"},
        {"Authorization": "Bearer sk-not-ours"},
        {"Authorization": "Bearer condt_" + "x" * 400},
        {"Authorization": f"Bearer {MASTER_KEY}"},  # the master key is not a virtual key
    ):
        r = await _get(gateway, "/v1/models", headers)
        _assert_401(r)
        assert key not in r.text and wrong not in r.text
    ok = await _get(gateway, "/v1/models", {"Authorization": f"Bearer {key}"})
    assert ok.status_code == 200
    azure_style = await _get(gateway, "/v1/models", {"api-key": key})
    assert azure_style.status_code == 200


async def test_disabled_key_stops_at_once_on_this_instance(
    gateway: Gateway, admin: AdminClient
) -> None:
    key = await _setup(admin)
    auth = {"Authorization": f"Bearer {key}"}
    assert (await _get(gateway, "/v1/models", auth)).status_code == 200  # now cached
    key_id = (await admin.list_keys())["data"][0]["id"]
    await admin.update_key(key_id, enabled=False)
    r = await _get(gateway, "/v1/models", auth)
    _assert_401(r)
    assert r.headers["x-should-retry"] == "false"
    await admin.update_key(key_id, enabled=True)
    assert (await _get(gateway, "/v1/models", auth)).status_code == 200
    rotated = await admin.rotate_key(key_id)
    _assert_401(await _get(gateway, "/v1/models", auth))
    assert (
        await _get(gateway, "/v1/models", {"Authorization": f"Bearer {rotated['key']}"})
    ).status_code == 200
    await admin.delete_key(key_id)
    _assert_401(await _get(gateway, "/v1/models", {"Authorization": f"Bearer {rotated['key']}"}))


async def test_expired_key(gateway: Gateway, admin: AdminClient) -> None:
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    key = await _setup(admin)  # a past expiry is refused at creation, allowed on update
    await admin.update_key((await admin.list_keys())["data"][0]["id"], expires_at=past)
    r = await _get(gateway, "/v1/models", {"Authorization": f"Bearer {key}"})
    _assert_401(r)
    assert "expired" in r.json()["error"]["message"]


async def test_ip_rules(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway()
    async with AdminClient(gw.url, MASTER_KEY) as admin:
        await admin.create_provider(name="p", type="mock")
        outside = (await admin.create_key(name="o", allowed_ips=["10.1.0.0/16"]))["key"]
        inside = (await admin.create_key(name="i", allowed_ips=["10.1.0.0/16", "127.0.0.0/8"]))[
            "key"
        ]
    r = await _get(gw, "/v1/models", {"Authorization": f"Bearer {outside}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "ip_not_allowed"
    assert (await _get(gw, "/v1/models", {"Authorization": f"Bearer {inside}"})).status_code == 200


async def test_forwarded_address_only_when_trusted(start_gateway: GatewayFactory) -> None:
    for allowed, expected in (("", 403), ("127.0.0.1", 200)):
        gw = await start_gateway(forwarded_allow_ips=allowed)
        async with AdminClient(gw.url, MASTER_KEY) as admin:
            key = (await admin.create_key(name="o", allowed_ips=["203.0.113.7"]))["key"]
        r = await _get(
            gw, "/v1/models", {"Authorization": f"Bearer {key}", "X-Forwarded-For": "203.0.113.7"}
        )
        assert r.status_code == expected


async def test_model_allow_list_filters_listing_and_lookup(
    gateway: Gateway, admin: AdminClient
) -> None:
    key = await _setup(admin, allowed_models=["gpt-*"])
    auth = {"Authorization": f"Bearer {key}"}
    listed = (await _get(gateway, "/v1/models", auth)).json()
    assert [m["id"] for m in listed["data"]] == ["gpt-a"]
    assert (await _get(gateway, "/v1/models/gpt-a", auth)).status_code == 200
    hidden = await _get(gateway, "/v1/models/claude-b", auth)
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "model_not_found"


async def test_admin_routes_refuse_virtual_keys(gateway: Gateway, admin: AdminClient) -> None:
    key = await _setup(admin)
    async with httpx2.AsyncClient(base_url=gateway.url) as http:
        for method, path in (
            ("GET", "/admin/v1/keys"),
            ("POST", "/admin/v1/keys"),
            ("GET", "/admin/v1/providers"),
            ("DELETE", "/admin/v1/models/gpt-a"),
            ("POST", "/admin/v1/keys/x/rotate"),
        ):
            for headers in ({}, {"Authorization": f"Bearer {key}"}, {"api-key": key}):
                r = await http.request(method, path, headers=headers, json={"name": "evil"})
                assert r.status_code == 401, (method, path, headers)
                assert r.json()["error"]["code"] == "invalid_api_key"
    assert (await admin.list_keys())["total"] == 1
    assert len((await admin.list_models())["data"]) == 2
