"""Admin API round trips (both stores) and its validation errors."""

from __future__ import annotations

import asyncio

import httpx2
import pytest

from conduit_tornado import AdminClient, AdminError, Gateway
from tests.conftest import MASTER_KEY

pytestmark = pytest.mark.asyncio


def hdr(token: str = MASTER_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_key_crud_round_trip(admin: AdminClient) -> None:
    created = await admin.create_key(
        name="team-a",
        allowed_models=["gpt-*", "claude-*"],
        allowed_ips=["10.0.0.0/8", "127.0.0.1"],
        rpm=60,
        rpd=1000,
        tpm=100_000,
        max_parallel=4,
        max_budget=12.5,
        budget_duration="monthly",
        expires_at="2030-01-01T00:00:00Z",
        group="research",
        metadata={"owner": "ana", "n": [1, 2]},
    )
    secret = created["key"]
    assert secret.startswith("condt_") and len(secret) >= 6 + 43
    assert created["prefix"] == secret[:12]
    assert "hash" not in created
    assert created["allowed_ips"] == ["10.0.0.0/8", "127.0.0.1/32"]
    assert created["spend"] == 0.0 and created["budget_duration"] == "monthly"

    got = await admin.get_key(created["id"])
    assert "key" not in got and "hash" not in got
    assert {k: v for k, v in created.items() if k != "key"} == got

    patched = await admin.update_key(
        created["id"], enabled=False, rpm=None, metadata={"owner": "bo"}
    )
    assert patched["enabled"] is False and patched["rpm"] is None
    assert patched["metadata"] == {"owner": "bo"} and patched["tpm"] == 100_000
    assert patched["updated_at"] >= got["updated_at"]

    rotated = await admin.rotate_key(created["id"])
    assert rotated["key"] != secret and rotated["prefix"] == rotated["key"][:12]

    await admin.delete_key(created["id"])
    with pytest.raises(AdminError) as info:
        await admin.get_key(created["id"])
    assert info.value.status == 404 and info.value.code == "key_not_found"


async def test_key_listing_filters_and_paging(admin: AdminClient) -> None:
    for i in range(5):
        await admin.create_key(name=f"k{i}", group="g1" if i < 3 else "g2", enabled=i != 4)
        # MongoDB keeps times to the millisecond: keys made within one are equally new,
        # and "newest first" is one order only when their creation times differ.
        await asyncio.sleep(0.002)
    page = await admin.list_keys(limit=2)
    assert page["total"] == 5 and len(page["data"]) == 2 and page["has_more"] is True
    assert [k["name"] for k in page["data"]] == ["k4", "k3"]  # newest first
    rest = await admin.list_keys(offset=2, limit=10)
    assert [k["name"] for k in rest["data"]] == ["k2", "k1", "k0"] and rest["has_more"] is False
    assert (await admin.list_keys(group="g1"))["total"] == 3
    assert [k["name"] for k in (await admin.list_keys(enabled=False))["data"]] == ["k4"]
    assert [k["name"] for k in (await admin.list_keys(name="k2"))["data"]] == ["k2"]
    assert all("key" not in k and "hash" not in k for k in rest["data"])


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"name": "x", "bogus": 1}, "bogus"),
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x", "rpm": 0}, "rpm"),
        ({"name": "x", "max_budget": -1}, "max_budget"),
        ({"name": "x", "budget_duration": "2w"}, "budget_duration"),
        ({"name": "x", "allowed_ips": ["not-an-ip"]}, "allowed_ips"),
        ({"name": "x", "expires_at": "soon"}, "expires_at"),
        ({"name": "x", "metadata": "text"}, "metadata"),
    ],
)
async def test_key_validation_errors(gateway: Gateway, body: dict[str, object], param: str) -> None:
    async with httpx2.AsyncClient(base_url=gateway.url) as http:
        r = await http.post("/admin/v1/keys", json=body, headers=hdr())
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error"
    if param == "bogus":
        assert "bogus" in err["message"]
    async with AdminClient(gateway.url, MASTER_KEY) as admin:
        assert (await admin.list_keys())["total"] == 0  # nothing half-written


@pytest.mark.parametrize(
    ("path", "body", "param", "message"),
    [
        (
            "/admin/v1/keys",
            {"name": "x", "allowed_ips": ["notanip"]},
            "allowed_ips",
            "allowed_ips: 'notanip' is not an IP address or CIDR network",
        ),
        ("/admin/v1/keys", {"name": "x", "rpm": 0}, "rpm", "rpm: must be at least 1"),
        ("/admin/v1/keys", {"name": "x", "rpm": 1.5}, "rpm", "rpm: must be a whole number"),
        (
            "/admin/v1/keys",
            {"name": "x", "budget_duration": "2w"},
            "budget_duration",
            "budget_duration: must be one of '1d', '7d', '30d', 'monthly' or 'total'",
        ),
        (
            "/admin/v1/keys",
            {"name": "x", "expires_at": "soon"},
            "expires_at",
            "expires_at: must be an ISO 8601 date-time, such as 2030-01-31T00:00:00Z",
        ),
        ("/admin/v1/keys", {"name": ""}, "name", "name: must not be empty"),
        (
            "/admin/v1/models",
            {"name": "m", "deployments": []},
            "deployments",
            "deployments: must list at least one deployment",
        ),
        (
            "/admin/v1/models",
            {"name": "m", "deployments": [{"provider": "p"}]},
            "deployments.0.model",
            "deployments[0].model: is required",
        ),
        (
            "/admin/v1/providers",
            {"name": "p", "type": "azure"},
            "base_url",
            "base_url is required for azure providers",
        ),
        (
            "/admin/v1/providers",
            {"name": "p", "type": "openai", "base_url": "ftp://host"},
            "base_url",
            "base_url must be an http(s) URL with a host",
        ),
    ],
)
async def test_validation_messages_are_sentences_on_their_field(
    gateway: Gateway, path: str, body: dict[str, object], param: str, message: str
) -> None:
    async with httpx2.AsyncClient(base_url=gateway.url) as http:
        r = await http.post(path, json=body, headers=hdr())
    assert r.status_code == 400
    err = r.json()["error"]
    assert (err["param"], err["message"]) == (param, message)
    assert "pydantic" not in r.text and "Value error" not in r.text


async def test_doubtful_keys_are_refused_naming_the_field(gateway: Gateway) -> None:
    async with AdminClient(gateway.url, MASTER_KEY) as admin:
        await admin.create_provider(name="p", type="mock")
        await admin.create_model(name="gpt-4o", deployments=[{"provider": "p", "model": "m"}])
        with pytest.raises(AdminError) as past:
            await admin.create_key(name="k", expires_at="2020-01-01T00:00:00Z")
        assert past.value.status == 400 and past.value.param == "expires_at"
        assert "2020-01-01T00:00:00+00:00 is in the past" in str(past.value)
        with pytest.raises(AdminError) as unknown:
            await admin.create_key(name="k", allowed_models=["gpt-4o", "gtp-4o", "nope", "x-*"])
        assert unknown.value.status == 400 and unknown.value.param == "allowed_models"
        assert "no model is named 'gtp-4o', 'nope' (the models are: gpt-4o)" in str(unknown.value)
        assert (await admin.list_keys())["total"] == 0  # nothing half-written
        # Known names and patterns (which may match models added later) are taken.
        made = await admin.create_key(name="k", allowed_models=["gpt-4o", "claude-*"])
        with pytest.raises(AdminError) as patched:
            await admin.update_key(made["id"], allowed_models=["gtp-4o"])
        assert patched.value.param == "allowed_models"
        # A past expiry on update is how a key is made to expire now: allowed.
        expired = await admin.update_key(made["id"], expires_at="2020-01-01T00:00:00Z")
        assert expired["expires_at"].startswith("2020-01-01")


async def test_malformed_json_and_non_object(gateway: Gateway) -> None:
    async with httpx2.AsyncClient(base_url=gateway.url, headers=hdr()) as http:
        bad = await http.post("/admin/v1/keys", content=b"{not json")
        arr = await http.post("/admin/v1/keys", content=b"[1]")
        empty = await http.post("/admin/v1/keys", content=b"")
        null_name = await http.patch("/admin/v1/keys/whatever", json={"name": None})
    assert bad.status_code == arr.status_code == empty.status_code == 400
    assert "parse the JSON" in bad.json()["error"]["message"]
    assert null_name.status_code in (400, 404)


async def test_provider_crud_never_returns_credentials(
    gateway: Gateway, admin: AdminClient
) -> None:
    created = await admin.create_provider(
        name="openai-main",
        type="openai",
        base_url="https://api.example.test/v1/",
        api_key="sk-very-secret-123",
        headers={"OpenAI-Organization": "org-secret-456"},
    )
    assert created["has_api_key"] is True and created["header_names"] == ["OpenAI-Organization"]
    assert created["base_url"] == "https://api.example.test/v1"
    async with httpx2.AsyncClient(base_url=gateway.url, headers=hdr()) as http:
        bodies = [
            (await http.get("/admin/v1/providers")).text,
            (await http.get(f"/admin/v1/providers/{created['id']}")).text,
            (await http.get("/admin/v1/providers/openai-main")).text,
            (await http.patch("/admin/v1/providers/openai-main", json={"enabled": False})).text,
        ]
        for text in bodies:
            assert "sk-very-secret-123" not in text and "org-secret-456" not in text
        # At rest the credentials are encrypted, not merely hidden.
        assert gateway.ctx is not None
        raw = await gateway.ctx.store.find_one("providers", {"name": "openai-main"})
        assert raw is not None and "sk-very-secret-123" not in repr(raw)
        # The decrypted secret reaches the routing snapshot, and a PATCH keeps it.
        assert gateway.ctx.catalog.providers["openai-main"].api_key == "sk-very-secret-123"
        assert gateway.ctx.catalog.providers["openai-main"].enabled is False
        cleared = await http.patch("/admin/v1/providers/openai-main", json={"api_key": None})
        assert cleared.json()["has_api_key"] is False
        dup = await http.post("/admin/v1/providers", json={"name": "openai-main", "type": "mock"})
        assert dup.status_code == 409 and dup.json()["error"]["code"] == "provider_exists"
        no_url = await http.post("/admin/v1/providers", json={"name": "az", "type": "azure"})
        assert no_url.status_code == 400
        bad_type = await http.post("/admin/v1/providers", json={"name": "x", "type": "nope"})
        assert bad_type.status_code == 400 and bad_type.json()["error"]["param"] == "type"
        rename = await http.patch("/admin/v1/providers/openai-main", json={"name": "other"})
        assert rename.status_code == 400
        assert (await http.delete("/admin/v1/providers/openai-main")).status_code == 200
        assert (await http.get("/admin/v1/providers/openai-main")).status_code == 404


async def test_model_mapping_crud_and_references(gateway: Gateway, admin: AdminClient) -> None:
    await admin.create_provider(name="p1", type="mock")
    await admin.create_provider(name="p2", type="mock")
    created = await admin.create_model(
        name="my-gpt4",
        deployments=[
            {"provider": "p1", "model": "gpt-4o", "weight": 3},
            {"provider": "p2", "model": "gpt-4o-mini", "priority": 1},
        ],
        strategy="least_busy",
        pricing={"input_per_mtok": 2.5, "output_per_mtok": 10},
    )
    assert created["name"] == "my-gpt4" and created["strategy"] == "least_busy"
    assert created["deployments"][0] == {
        "provider": "p1",
        "model": "gpt-4o",
        "weight": 3.0,
        "priority": 0,
    }
    async with httpx2.AsyncClient(base_url=gateway.url, headers=hdr()) as http:
        got = (await http.get("/admin/v1/models/my-gpt4")).json()
        assert got == created
        patched = await http.patch(
            "/admin/v1/models/my-gpt4", json={"pricing": None, "strategy": "weighted"}
        )
        assert patched.status_code == 200 and "pricing" not in patched.json()
        unknown = await http.post(
            "/admin/v1/models",
            json={"name": "m2", "deployments": [{"provider": "ghost", "model": "x"}]},
        )
        assert (
            unknown.status_code == 400
            and unknown.json()["error"]["param"] == "deployments[0].provider"
        )
        empty = await http.post("/admin/v1/models", json={"name": "m3", "deployments": []})
        assert empty.status_code == 400
        dup = await http.post(
            "/admin/v1/models",
            json={"name": "my-gpt4", "deployments": [{"provider": "p1", "model": "x"}]},
        )
        assert dup.status_code == 409
        in_use = await http.delete("/admin/v1/providers/p1")
        assert in_use.status_code == 409 and in_use.json()["error"]["code"] == "provider_in_use"
        slashed = await http.post(
            "/admin/v1/models",
            json={"name": "openai/gpt-4o", "deployments": [{"provider": "p1", "model": "x"}]},
        )
        assert slashed.status_code == 201
        assert (await http.get("/admin/v1/models/openai/gpt-4o")).json()["name"] == "openai/gpt-4o"
        listed = (await http.get("/admin/v1/models")).json()
        assert [m["name"] for m in listed["data"]] == ["my-gpt4", "openai/gpt-4o"]
        assert (await http.delete("/admin/v1/models/my-gpt4")).status_code == 200
        assert (await http.get("/admin/v1/models/my-gpt4")).status_code == 404


async def test_nested_limits_are_stored_compact_and_cleared_by_null(admin: AdminClient) -> None:
    created = await admin.create_key(
        name="n", model_limits={"gpt": {"rpm": 5, "tpm": None}}, user_limits={"rpm": 2}
    )
    assert created["model_limits"] == {"gpt": {"rpm": 5}} and created["user_limits"] == {"rpm": 2}
    plain = await admin.create_key(name="p")
    assert plain["model_limits"] == {} and plain["user_limits"] == {}
    patched = await admin.update_key(
        created["id"], model_limits={"claude": {"tpm": 100}}, user_limits=None
    )
    assert patched["model_limits"] == {"claude": {"tpm": 100}} and patched["user_limits"] == {}
    untouched = await admin.update_key(created["id"], rpm=9)
    assert untouched["model_limits"] == {"claude": {"tpm": 100}}


async def test_required_fields_cannot_be_nulled(gateway: Gateway, admin: AdminClient) -> None:
    key = await admin.create_key(name="k")
    await admin.create_provider(name="p", type="mock")
    await admin.create_model(name="m", deployments=[{"provider": "p", "model": "x"}])
    async with httpx2.AsyncClient(base_url=gateway.url, headers=hdr()) as http:
        for path, field in (
            (f"/admin/v1/keys/{key['id']}", "name"),
            (f"/admin/v1/keys/{key['id']}", "enabled"),
            ("/admin/v1/providers/p", "type"),
            ("/admin/v1/providers/p", "enabled"),
            ("/admin/v1/models/m", "strategy"),
            ("/admin/v1/models/m", "deployments"),
        ):
            r = await http.patch(path, json={field: None})
            assert r.status_code == 400 and r.json()["error"]["param"] == field, (
                path,
                field,
                r.text,
            )
