"""The document's assembler: from a route table and the descriptions of each area, the
OpenAPI 3.1 document (paths, security, components)."""

from __future__ import annotations

import copy
import importlib.metadata
import re
from collections.abc import Sequence

import tornado.web

from . import admin, hub, inference, public, realtime, responses, ui
from .common import ADMIN_ERRORS, ANY_OBJECT, CLIENT_ERRORS, ERROR_RESPONSE, REASONS, Json, Op, ref

Route = tuple[str, type[tornado.web.RequestHandler]]

# Handlers are named "module.Class" (their module's last name), so this description does
# not import every handler module.

#: handler -> its operations, by method
OPS: dict[str, dict[str, Op]] = {
    **inference.OPS,
    **public.OPS,
    **responses.OPS,
    **realtime.OPS,
    **admin.OPS,
    **ui.OPS,
}
#: handler -> path parameter names (one per group of its pattern, in order)
PARAMS: dict[str, tuple[str, ...]] = {
    **inference.PARAMS,
    **responses.PARAMS,
    **realtime.PARAMS,
    **admin.PARAMS,
    **ui.PARAMS,
}
# The hub's routes are mounted in hub mode only (api/routes.make_app).
_ALL_OPS = {**OPS, **hub.OPS}
_ALL_PARAMS = {**PARAMS, **hub.PARAMS}


def _client_schemas() -> dict[str, Json]:
    # In the order the document has always listed them, so that it stays byte for byte the
    # same for anyone who diffs or caches it.
    return {
        "ErrorResponse": ERROR_RESPONSE,
        **inference.SCHEMAS,
        **realtime.SESSION_SCHEMAS,
        **public.SCHEMAS,
        **responses.SCHEMAS,
        **realtime.SECRET_SCHEMAS,
        **inference.IMAGE_UPLOAD_SCHEMAS,
        **realtime.CALL_SCHEMAS,
    }


_SECURITY_SCHEMES: Json = {
    "virtualKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "A virtual key (condt_...) made with the admin API.",
    },
    "masterKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "The gateway's master key (CONDUIT_MASTER_KEY).",
    },
}
_KIND_SECURITY = {"admin": ("masterKey",), "client": ("virtualKey",), "hub": ("hubSession",)}
_KIND_ERRORS = {"admin": ADMIN_ERRORS, "client": CLIENT_ERRORS, "hub": hub.ERRORS}


def _kind(path: str) -> str:
    if path.startswith("/admin/") or (
        path.startswith("/ui/api/") and path != "/ui/api/login"
    ):  # the web UI's API: a UI session, which only the master key opens
        return "admin"
    if path.startswith("/v1/"):
        return "client"
    return "public"


def _operation(path: str, op: Op, params: Sequence[str], op_id: str) -> Json:
    kind = op.kind or _kind(path)
    responses: Json = {}
    content: Json = {}
    if op.ok is not None:
        content["application/json"] = {"schema": op.ok}
    content.update({t: {"schema": s} for t, s in op.other_types.items()})
    responses[str(op.status)] = {"description": op.summary}
    if content:
        responses[str(op.status)]["content"] = content
    errors = _KIND_ERRORS.get(kind, (500, 503))
    for code in sorted({*errors, *op.also}):
        responses[str(code)] = {"$ref": f"#/components/responses/{op.envelope}{code}"}
    schemes = op.security if op.security is not None else _KIND_SECURITY.get(kind, ())
    out: Json = {
        "operationId": op_id,
        "summary": op.summary,
        "tags": [kind],
        "parameters": [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
            for n in params
        ]
        + [copy.deepcopy(q) for q in op.query],
        "responses": responses,
        "security": [{s: []} for s in schemes],
    }
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {op.body_type: {"schema": ref(op.body)}},
        }
    return out


_GROUP = re.compile(r"\((?:[^()\\]|\\.)*\)")


def _template(pattern: str, names: Sequence[str]) -> str:
    """``/admin/v1/keys/([^/]+)/rotate`` -> ``/admin/v1/keys/{key_id}/rotate``;
    ``/openapi\\.json`` -> ``/openapi.json``; the hub's ``/?`` (the prefix with or without
    its slash) -> ``/``."""
    parts = iter(names)
    path = _GROUP.sub(lambda _: "{" + next(parts) + "}", pattern)
    path = re.sub(r"/\?$", "/", path)
    return re.sub(r"\\(.)", r"\1", path)  # an escaped character is itself


def handler_name(handler: type[tornado.web.RequestHandler]) -> str:
    return handler.__module__.rsplit(".", 1)[-1] + "." + handler.__qualname__


UNDESCRIBED = "Not described yet."


def _undescribed(handler: type[tornado.web.RequestHandler]) -> dict[str, Op]:
    """A route added without a description is still listed, with its methods and auth;
    tests/test_openapi.py fails while any route is described only this way."""
    allowed = getattr(handler, "allowed_methods", None)
    methods = allowed() if allowed is not None else ("GET",)
    return {m.lower(): Op(UNDESCRIBED, ANY_OBJECT) for m in methods}


def _errors(prefix: str, envelope: str) -> Json:
    """An error response per status, in one envelope (Op.envelope names the prefix)."""
    return {
        f"{prefix}{code}": {
            "description": reason,
            "content": {"application/json": {"schema": ref(envelope)}},
        }
        for code, reason in REASONS.items()
    }


def build(table: Sequence[Route]) -> Json:
    """The document for a route table (as ``routes.routes()`` gives it, unprefixed; in hub
    mode with ``hub_routes("")`` before it, as ``make_app`` mounts them)."""
    paths: Json = {}
    used: set[str] = set()
    taken: set[str] = set()
    for pattern, handler in table:
        name = handler_name(handler)
        ops = _ALL_OPS.get(name) or _undescribed(handler)
        groups = len(_GROUP.findall(pattern))
        names = _ALL_PARAMS.get(name, ())[:groups]
        if len(names) != groups:
            raise ValueError(f"{pattern}: name its path parameters in api/openapi/")
        path = _template(pattern, names)
        if path in taken:
            continue  # the router dispatches to the first match (the hub's "/" before ours)
        taken.add(path)
        item = paths.setdefault(path, {})
        for method, op in ops.items():
            op_id = method + "_" + re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_")
            item[method] = operation = _operation(path, op, names, op_id)
            used.update(s for alternative in operation["security"] for s in alternative)
    schemes = dict(_SECURITY_SCHEMES)
    if "hubSession" in used:
        schemes["hubSession"] = hub.SECURITY_SCHEME
    components_schemas = {**_client_schemas(), **admin.VIEWS, **admin.model_schemas()}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "conduit-tornado",
            "version": importlib.metadata.version("conduit-tornado"),
            "description": "An OpenAI-compatible LLM gateway: the client API under /v1 "
            "(virtual keys), the admin API under /admin/v1 (the master key), health checks.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": schemes,
            "schemas": components_schemas,
            "responses": {**_errors("E", "ErrorResponse"), **_errors("A", "AnthropicError")},
        },
    }
