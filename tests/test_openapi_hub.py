"""In JupyterHub mode /openapi.json describes the hub's routes too (only there: without a
hub they are not mounted), and a gateway in hub mode answers them as described."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest
from jsonschema import Draft202012Validator

from conduit_tornado.api.base import AdminHandler, PublicHandler
from conduit_tornado.api.openapi import UNDESCRIBED, build, handler_name
from conduit_tornado.api.openapi.hub import OPS, PARAMS
from conduit_tornado.api.routes import app_routes, routes
from conduit_tornado.hub.handlers import HubSessionHandler, hub_routes
from tests.conftest import MASTER_KEY, GatewayFactory, free_port

HUB_DOCUMENT = build(app_routes(hub=True))
PLAIN_DOCUMENT = build(routes())


def test_every_hub_route_is_described_with_who_may_call_it() -> None:
    for pattern, handler in hub_routes(""):
        path = "/" if pattern == "/?" else pattern.replace("([^/]+)", "{name}")
        item = HUB_DOCUMENT["paths"][path]
        assert set(item) == {m.lower() for m in handler.allowed_methods()}, path
        for op in item.values():
            assert op["summary"] != UNDESCRIBED, f"describe {pattern} in api/openapi/hub.py"
            schemes = {name for s in op["security"] for name in s}
            if issubclass(handler, AdminHandler):
                assert schemes == {"masterKey"}, path
            elif issubclass(handler, HubSessionHandler):
                keys = {"virtualKey"} if handler.admits_keys else set()
                assert schemes == {"hubSession", *keys}, path
            else:
                assert issubclass(handler, PublicHandler) and schemes == set(), path
            params = [p["name"] for p in op["parameters"] if p["in"] == "path"]
            assert params == [s[1:-1] for s in path.split("/") if s.startswith("{")], path
    scheme = HUB_DOCUMENT["components"]["securitySchemes"]["hubSession"]
    assert scheme["in"] == "cookie" and scheme["name"] == "conduit_hub_session"


def test_the_hub_descriptions_name_only_hub_handlers() -> None:
    hub_names = {handler_name(h) for _, h in hub_routes("")}
    assert set(OPS) <= hub_names and set(PARAMS) <= hub_names
    # Named "module.Class" like the main table's: none may shadow a main route's name.
    assert not hub_names & {handler_name(h) for _, h in routes()}


def test_without_a_hub_the_document_has_no_hub_routes() -> None:
    assert not [p for p in PLAIN_DOCUMENT["paths"] if p.startswith("/hub/")]
    assert "hubSession" not in PLAIN_DOCUMENT["components"]["securitySchemes"]
    # "/" is the gateway's own root (a redirect to the web UI) unless the hub takes it.
    assert PLAIN_DOCUMENT["paths"]["/"] != HUB_DOCUMENT["paths"]["/"]
    plain = {p: v for p, v in PLAIN_DOCUMENT["paths"].items() if p != "/"}
    hub_paths = {p: v for p, v in HUB_DOCUMENT["paths"].items() if p in plain}
    assert hub_paths == plain  # the rest unchanged


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    """A validator for one schema of the document, its $refs resolved in the document."""
    return Draft202012Validator({"components": document["components"], "allOf": [schema]})


def _answer_schema(document: dict[str, Any], path: str, method: str, status: int) -> Any:
    answer = document["paths"][path][method]["responses"][str(status)]
    if "$ref" in answer:
        answer = document["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
    return answer.get("content", {}).get("application/json", {}).get("schema")


@pytest.mark.asyncio
async def test_a_gateway_in_hub_mode_serves_and_keeps_the_hub_description(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hub mode without a hub: its API on a closed port, so the one route that asks it
    # (the spawner's) answers 503 as described; the others need no hub to answer.
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "hub-token-of-the-test")
    monkeypatch.setenv("JUPYTERHUB_API_URL", f"http://127.0.0.1:{free_port()}/hub/api")
    gw = await start_gateway(jupyterhub="on", base_path="/services/conduit")
    admin = {"Authorization": f"Bearer {MASTER_KEY}"}
    async with httpx2.AsyncClient(timeout=10, follow_redirects=False) as http:
        served = await http.get(f"{gw.url}/openapi.json")
        assert served.status_code == 200
        doc = served.json()
        assert doc["servers"] == [{"url": "/services/conduit"}]
        assert doc["paths"] == HUB_DOCUMENT["paths"] and "/hub/api/me" in doc["paths"]

        created = await http.post(f"{gw.url}/admin/v1/keys", json={"name": "k"}, headers=admin)
        key = {"Authorization": f"Bearer {created.json()['key']}"}
        calls = [
            ("get", "/hub/api/me", key, 200),
            ("get", "/hub/api/me/usage", key, 200),
            ("get", "/hub/api/me", {}, 401),
            ("post", "/hub/api/me/rotate", key, 401),  # a hub session only, not a key
            ("get", "/hub/api/me/usage?group_by=week", key, 400),
            ("post", "/hub/api/users/{name}/environment", admin, 503),
            ("get", "/hub/login", {}, 302),
            ("get", "/", {}, 302),
        ]
        for method, path, headers, status in calls:
            url = gw.url + path.replace("{name}", "ana")
            answer = await http.request(method.upper(), url, headers=headers, json=None)
            assert answer.status_code == status, (path, answer.text)
            schema = _answer_schema(doc, path.split("?")[0], method, status)
            if status == 302:
                assert schema is None and answer.headers["Location"], path
                continue
            errors = list(_validator(doc, schema).iter_errors(answer.json()))
            assert errors == [], (path, [e.message for e in errors])
