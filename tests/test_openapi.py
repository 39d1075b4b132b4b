"""GET /openapi.json describes every route truthfully, and schemathesis holds the gateway
to it: generated requests (valid and invalid) against a real gateway with the mock provider
and real keys get no 5xx and no answer outside the document."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx2
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from jsonschema import Draft202012Validator
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conduit_tornado.api import openapi
from conduit_tornado.api.base import AdminHandler, ClientHandler, PublicHandler
from conduit_tornado.api.openapi import UNDESCRIBED, build, handler_name
from conduit_tornado.api.realtime import RealtimeSocketHandler
from conduit_tornado.api.routes import routes
from conduit_tornado.core.schemas import KeyCreate, ModelCreate
from tests.conftest import MASTER_KEY
from tests.gateway_process import MODEL, GatewayProcess

DOCUMENT = build(routes())


def _methods(handler: type) -> set[str]:
    if issubclass(handler, RealtimeSocketHandler):
        return {"get"}
    return {m.lower() for m in handler.allowed_methods()}  # type: ignore[attr-defined]


def test_every_route_is_described_with_its_methods_and_auth() -> None:
    table = routes()
    assert len(DOCUMENT["paths"]) == len(table)
    for (pattern, handler), (path, item) in zip(table, DOCUMENT["paths"].items(), strict=True):
        assert set(item) == _methods(handler), pattern
        for op in item.values():
            assert op["summary"] != UNDESCRIBED, f"describe {pattern} in api/openapi/"
            schemes = {name for s in op["security"] for name in s}
            if issubclass(handler, AdminHandler):
                assert schemes == {"masterKey"}, path
            elif issubclass(handler, ClientHandler | RealtimeSocketHandler):
                assert schemes == {"virtualKey"}, path
            else:
                assert issubclass(handler, PublicHandler) and schemes == set(), path
            params = [p["name"] for p in op["parameters"] if p["in"] == "path"]
            assert params == [s[1:-1] for s in path.split("/") if s.startswith("{")], path


def test_every_description_is_of_a_routed_handler() -> None:
    routed = {handler_name(h) for _, h in routes()}
    assert set(openapi._OPS) <= routed and set(openapi._PARAMS) <= routed


def test_admin_bodies_are_the_models_the_handlers_validate_with() -> None:
    schemas = DOCUMENT["components"]["schemas"]
    create = DOCUMENT["paths"]["/admin/v1/keys"]["post"]["requestBody"]["content"]
    assert create["application/json"]["schema"] == {"$ref": "#/components/schemas/KeyCreate"}
    assert schemas["KeyCreate"]["required"] == ["name"]
    assert set(schemas["KeyCreate"]["properties"]) == set(KeyCreate.model_fields)
    assert set(schemas["ModelCreate"]["properties"]) == set(ModelCreate.model_fields)
    # Nested models are components too, and every reference resolves.
    text = json.dumps(DOCUMENT)
    for ref in {r.split('"')[0] for r in text.split('"$ref": "#/components/')[1:]}:
        kind, name = ref.split("/")
        assert name in DOCUMENT["components"][kind], ref
    for name, schema in schemas.items():
        Draft202012Validator.check_schema(schema), name


def test_errors_are_the_envelope() -> None:
    envelope = DOCUMENT["components"]["schemas"]["ErrorResponse"]
    validator = Draft202012Validator(envelope)
    assert validator.is_valid({"error": {"message": "m", "type": "t", "param": None, "code": None}})
    assert not validator.is_valid({"error": {"message": "m"}})
    assert not validator.is_valid({"detail": "m"})


# -- schemathesis against a gateway in its own process ---------------------------------------


@pytest.fixture(scope="module")
def served() -> Iterator[GatewayProcess]:
    gw = GatewayProcess()
    try:
        yield gw
        assert gw.stalls() == [], "the gateway's event loop was blocked"
    finally:
        gw.stop()
    assert gw.process.returncode == 0


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def test_the_document_is_served_without_a_key(served: GatewayProcess) -> None:
    r = httpx2.get(served.url + "/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == json.loads(json.dumps(DOCUMENT))  # the same, through JSON


# The coverage phase (every boundary case of every schema) would take minutes here: the
# generated phases with a bounded number of examples keep the run short.
schema = schemathesis.openapi.from_dict(
    DOCUMENT, config=schemathesis.Config.from_dict({"phases": {"coverage": {"enabled": False}}})
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@schema.parametrize()
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_generated_requests_get_documented_answers(
    case: schemathesis.Case, served: GatewayProcess, session: requests.Session
) -> None:
    path = case.operation.path
    token = MASTER_KEY if path.startswith("/admin/") else served.key
    if isinstance(case.body, dict) and "model" in case.body and path.startswith("/v1/"):
        case.body["model"] = MODEL  # a model that exists, so requests reach the provider
    before = len(served.stalls())
    case.call_and_validate(
        base_url=served.url,
        session=session,
        headers={"Authorization": f"Bearer {token}"},
        checks=CHECKS,
        timeout=30,
    )
    blocked = served.stalls()[before:]
    assert blocked == [], f"the gateway's loop was blocked {blocked} s by {case.as_curl_command()}"
