"""The vocabulary every part of the document is written in: the JSON shapes reused across
areas, the description of one operation (``Op``), query parameters, and the error statuses
each kind of route may answer with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]

CLIENT_ERRORS = (400, 401, 403, 404, 413, 429, 500, 502, 503, 504)
ADMIN_ERRORS = (400, 401, 404, 409, 413, 500, 503)
REASONS = {
    400: "The request is invalid.",
    401: "No valid key was presented.",
    403: "The key may not do this (model, address).",
    404: "No such resource, model or route.",
    409: "The name is taken, or the resource is still referenced.",
    413: "The request body is too large.",
    426: "A WebSocket upgrade is needed (the Responses WebSocket mode).",
    429: "A rate limit or budget refused the request (see Retry-After).",
    500: "An error in the gateway.",
    502: "The provider answered with an error.",
    503: "The store or every deployment is unavailable.",
    504: "The provider did not answer in time.",
}


def ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Json) -> Json:
    return {"anyOf": [schema, {"type": "null"}]}


STRING = {"type": "string"}
MODEL = {"type": "string", "minLength": 1, "description": "A virtual model name."}
ANY_OBJECT: Json = {"type": "object"}
OBJ_ARRAY: Json = {"type": "array", "items": ANY_OBJECT}
METADATA: Json = {"type": "object", "additionalProperties": {"type": "string"}}


@dataclass(frozen=True)
class Op:
    summary: str
    ok: Json | None = None  # the 2xx body schema for application/json
    status: int = 200
    body: str | None = None  # a components schema name
    body_type: str = "application/json"
    query: Sequence[Json] = ()
    other_types: dict[str, Json] = field(default_factory=dict)  # more 2xx content types
    tags: tuple[str, ...] = ()
    #: Errors in another envelope than OpenAI's ("A": Anthropic's, on /v1/messages).
    envelope: str = "E"
    #: Error statuses beyond the route kind's usual ones.
    also: tuple[int, ...] = ()
    #: The route's kind (admin, client, public, hub) when its path does not tell it.
    kind: str | None = None
    #: Security schemes any one of which admits a caller, when not the kind's usual one.
    security: tuple[str, ...] | None = None


def q(name: str, schema: Json, description: str = "") -> Json:
    p: Json = {"name": name, "in": "query", "required": False, "schema": schema}
    if description:
        p["description"] = description
    return p


PAGE = (
    q("offset", {"type": "integer", "minimum": 0, "maximum": 10**9}),
    q("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
)
BOOL = {"enum": ["true", "false", "1", "0", "yes", "no"]}
# For text/event-stream, OpenAPI 3.1 tools read the schema as that of each event.
SSE = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": STRING,
        "data": {
            "type": "string",
            "description": "A JSON chunk; the last event of a chat stream is [DONE].",
        },
    },
}
TEXT = {"type": "string"}
AUDIO = {"type": "string", "contentMediaType": "application/octet-stream"}


def page(item: Json) -> Json:
    """An admin list: one page of ``item`` with its offset and total."""
    return {
        "type": "object",
        "required": ["object", "data", "total", "offset", "limit", "has_more"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": item},
            "total": {"type": "integer", "minimum": 0},
            "offset": {"type": "integer", "minimum": 0},
            "limit": {"type": "integer", "minimum": 1},
            "has_more": {"type": "boolean"},
        },
    }


ERROR_RESPONSE: Json = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": STRING,
                "type": STRING,
                "param": nullable(STRING),
                "code": nullable(STRING),
            },
        }
    },
}
