"""GET /openapi.json: an OpenAPI 3.1 description of the gateway's own routes.

Built from the route table, so a route added without a description here fails the build
(and tests/test_openapi.py) instead of going undocumented. The admin request bodies are the
pydantic models the handlers validate with (their ``model_json_schema()``); the client
routes are described by the subset of OpenAI's request fields the handlers check, leaving
the rest open, since unknown fields are passed on to the provider. Responses are described
as loosely as the handlers promise and no looser: every error is the envelope
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.metadata
import re
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import tornado.web
from pydantic import BaseModel

from conduit_tornado.core import schemas

from . import inference, media
from .base import PublicHandler, dumps

Json = dict[str, Any]
Route = tuple[str, type[tornado.web.RequestHandler]]

CLIENT_ERRORS = (400, 401, 403, 404, 413, 429, 500, 502, 503, 504)
ADMIN_ERRORS = (400, 401, 404, 409, 413, 500, 503)
_REASONS = {
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


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Json) -> Json:
    return {"anyOf": [schema, {"type": "null"}]}


STRING = {"type": "string"}
MODEL = {"type": "string", "minLength": 1, "description": "A virtual model name."}
ANY_OBJECT: Json = {"type": "object"}

# -- schemas written here -------------------------------------------------------------------

_CLIENT_SCHEMAS: dict[str, Json] = {
    "ErrorResponse": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": STRING,
                    "type": STRING,
                    "param": _nullable(STRING),
                    "code": _nullable(STRING),
                },
            }
        },
    },
    "ChatCompletionRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": MODEL,
            "messages": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["role"],
                    "properties": {"role": STRING},
                },
            },
            "n": _nullable({"type": "integer", "minimum": 1, "maximum": inference.MAX_N}),
            "stream": _nullable({"type": "boolean"}),
            "user": STRING,
        },
        "description": "Other fields of OpenAI's request are passed on to the provider.",
    },
    "ChatCompletion": {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": STRING,
            "object": {"const": "chat.completion"},
            "created": {"type": "integer"},
            "model": STRING,
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "message"],
                    "properties": {
                        "index": {"type": "integer"},
                        "message": {
                            "type": "object",
                            "required": ["role"],
                            "properties": {"role": STRING, "content": _nullable(STRING)},
                        },
                        "finish_reason": _nullable(STRING),
                    },
                },
            },
            "usage": _ref("Usage"),
        },
    },
    "CompletionRequest": {
        "type": "object",
        "required": ["model", "prompt"],
        "properties": {
            "model": MODEL,
            "prompt": {
                "anyOf": [
                    STRING,
                    {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "anyOf": [
                                STRING,
                                {"type": "integer"},
                                {"type": "array", "items": {"type": "integer"}},
                            ]
                        },
                    },
                ]
            },
            "n": _nullable({"type": "integer", "minimum": 1, "maximum": inference.MAX_N}),
            "stream": _nullable({"type": "boolean"}),
        },
    },
    "Completion": {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": STRING,
            "object": {"const": "text_completion"},
            "created": {"type": "integer"},
            "model": STRING,
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "text"],
                    "properties": {"index": {"type": "integer"}, "text": STRING},
                },
            },
            "usage": _ref("Usage"),
        },
    },
    "Usage": {
        "type": "object",
        "properties": {
            "prompt_tokens": {"type": "integer", "minimum": 0},
            "completion_tokens": {"type": "integer", "minimum": 0},
            "total_tokens": {"type": "integer", "minimum": 0},
        },
    },
    "EmbeddingRequest": {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": MODEL,
            "input": {
                "anyOf": [
                    {"type": "string", "minLength": 1},
                    {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "string", "minLength": 1},
                    },
                    {"type": "array", "minItems": 1, "items": {"type": "integer"}},
                    {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "array", "minItems": 1, "items": {"type": "integer"}},
                    },
                ]
            },
            "encoding_format": {"enum": ["float", "base64"]},
            "dimensions": _nullable({"type": "integer", "minimum": 1}),
        },
    },
    "EmbeddingList": {
        "type": "object",
        "required": ["object", "data", "model"],
        "properties": {
            "object": {"const": "list"},
            "model": STRING,
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["object", "embedding", "index"],
                    "properties": {
                        "object": {"const": "embedding"},
                        "index": {"type": "integer"},
                        "embedding": {
                            "anyOf": [
                                {"type": "array", "items": {"type": "number"}},
                                {"type": "string", "contentEncoding": "base64"},
                            ]
                        },
                    },
                },
            },
            "usage": _ref("Usage"),
        },
    },
    "Model": {
        "type": "object",
        "required": ["id", "object", "created", "owned_by"],
        "properties": {
            "id": STRING,
            "object": {"const": "model"},
            "created": {"type": "integer"},
            "owned_by": STRING,
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": _ref("Model")},
        },
    },
    "ImageRequest": {
        "type": "object",
        "required": ["model", "prompt"],
        "properties": {
            "model": MODEL,
            "prompt": {"type": "string", "pattern": r"\S"},
            "n": {"type": "integer", "minimum": 1, "maximum": 10},
            "response_format": {"enum": list(media.IMAGE_FORMATS)},
            "size": STRING,
            "quality": STRING,
        },
    },
    "ImageList": {
        "type": "object",
        "required": ["created", "data"],
        "properties": {
            "created": {"type": "integer"},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"url": STRING, "b64_json": STRING, "revised_prompt": STRING},
                },
            },
        },
    },
    "AudioUpload": {
        "type": "object",
        "required": ["file", "model"],
        "properties": {
            "file": {"type": "string", "contentMediaType": "application/octet-stream"},
            "model": MODEL,
            "response_format": {"enum": list(media.TRANSCRIPT_FORMATS)},
            "language": STRING,
            "prompt": STRING,
            "temperature": STRING,
        },
    },
    "Transcript": {
        "type": "object",
        "required": ["text"],
        "properties": {"text": STRING},
    },
    "SpeechRequest": {
        "type": "object",
        "required": ["model", "input", "voice"],
        "properties": {
            "model": MODEL,
            "input": {"type": "string", "minLength": 1, "maxLength": media.MAX_SPEECH_INPUT},
            "voice": {"anyOf": [{"type": "string", "minLength": 1}, {"type": "object"}]},
            "response_format": {"enum": list(media.SPEECH_FORMATS)},
            "speed": {"type": "number", "minimum": 0.25, "maximum": 4.0},
        },
    },
    "SpeechStreamRequest": {
        "allOf": [
            _ref("SpeechRequest"),
            {"properties": {"stream_format": {"enum": ["audio", "sse"]}}},
        ]
    },
    "RealtimeSessionRequest": {
        "type": "object",
        "required": ["model"],
        "properties": {
            "model": MODEL,
            "modalities": {"type": "array", "items": {"enum": ["text", "audio"]}},
            "instructions": STRING,
            "voice": STRING,
            "temperature": {"type": "number"},
            "tools": {"type": "array"},
        },
        "description": "Other session settings are kept and passed on when the socket opens.",
    },
    "RealtimeSession": {
        "type": "object",
        "required": ["id", "object", "model", "client_secret", "websocket_url"],
        "properties": {
            "id": STRING,
            "object": {"const": "realtime.session"},
            "model": STRING,
            "client_secret": {
                "type": "object",
                "required": ["value", "expires_at"],
                "properties": {"value": STRING, "expires_at": {"type": "integer"}},
            },
            "websocket_url": {"type": "string", "format": "uri"},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"const": "ok"}, "store": STRING, "pid": {"type": "integer"}},
    },
}

_ADMIN_VIEWS: dict[str, Json] = {
    "Key": {
        "type": "object",
        "required": ["id", "name", "prefix", "enabled"],
        "properties": {
            "id": STRING,
            "name": STRING,
            "prefix": STRING,
            "enabled": {"type": "boolean"},
            "spend": {"type": "number"},
        },
        "not": {"required": ["hash"]},
    },
    "KeyWithSecret": {
        "allOf": [
            _ref("Key"),
            {
                "required": ["key"],
                "properties": {"key": {"type": "string", "pattern": "^condt_"}},
                "description": "The key itself is shown here once and never again.",
            },
        ]
    },
    "Provider": {
        "type": "object",
        "required": ["id", "name", "type", "has_api_key", "enabled"],
        "properties": {
            "id": STRING,
            "name": STRING,
            "type": {"enum": list(typing.get_args(schemas.ProviderType))},
            "base_url": _nullable(STRING),
            "has_api_key": {"type": "boolean"},
            "header_names": {"type": "array", "items": STRING},
            "enabled": {"type": "boolean"},
        },
        "not": {"anyOf": [{"required": ["api_key"]}, {"required": ["headers"]}]},
    },
    "ModelMapping": {
        "type": "object",
        "required": ["name", "deployments"],
        "properties": {"name": STRING, "deployments": {"type": "array", "minItems": 1}},
    },
    "Group": {
        "type": "object",
        "required": ["name"],
        "properties": {"name": STRING, "spend": {"type": "number"}},
    },
    "Deleted": {
        "type": "object",
        "required": ["id", "object", "deleted"],
        "properties": {"id": STRING, "object": STRING, "deleted": {"const": True}},
    },
    "UsageReport": {
        "type": "object",
        "required": ["object", "data", "totals", "alerts"],
        "properties": {
            "object": {"const": "usage"},
            "group_by": {"enum": ["day", "key", "model", "user"]},
            "data": {"type": "array", "items": ANY_OBJECT},
            "totals": ANY_OBJECT,
            "alerts": {"type": "array", "items": ANY_OBJECT},
        },
    },
}


def _page(item: Json) -> Json:
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


_BODY_MODELS: tuple[type[BaseModel], ...] = (
    schemas.KeyCreate,
    schemas.KeyUpdate,
    schemas.GroupCreate,
    schemas.GroupUpdate,
    schemas.SpendUpdate,
    schemas.ProviderCreate,
    schemas.ProviderUpdate,
    schemas.ModelCreate,
    schemas.ModelUpdate,
)


def _model_schemas() -> dict[str, Json]:
    """The admin bodies as pydantic describes them, their nested models hoisted into
    components (pydantic puts them under each schema's own $defs)."""
    out: dict[str, Json] = {}
    for model in _BODY_MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out


# -- operations -----------------------------------------------------------------------------


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


def _q(name: str, schema: Json, description: str = "") -> Json:
    p: Json = {"name": name, "in": "query", "required": False, "schema": schema}
    if description:
        p["description"] = description
    return p


PAGE = (
    _q("offset", {"type": "integer", "minimum": 0, "maximum": 10**9}),
    _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
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

# Handlers are named "module.Class" (their module under api/), so this description does not
# import every handler module.

# handler -> path parameter names (one per group of its pattern, in order)
_PARAMS: dict[str, tuple[str, ...]] = {
    "models.ModelHandler": ("model",),
    "responses.ResponseHandler": ("response_id",),
    "responses.ResponseCancelHandler": ("response_id",),
    "responses.InputItemsHandler": ("response_id",),
    "conversations.ConversationHandler": ("conversation_id",),
    "conversations.ConversationItemsHandler": ("conversation_id",),
    "conversations.ConversationItemHandler": ("conversation_id", "item_id"),
    "realtime.RealtimeSocketHandler": ("session_id",),
    "admin.KeyHandler": ("key_id",),
    "admin.KeyRotateHandler": ("key_id",),
    "admin_limits.KeySpendHandler": ("key_id",),
    "admin.ProviderHandler": ("provider",),
    "admin.ModelAdminHandler": ("model",),
    "admin_limits.GroupHandler": ("group",),
    "admin_limits.GroupSpendHandler": ("group",),
}

_TRANSCRIPT_TYPES = dict.fromkeys(("text/plain", "text/vtt"), TEXT)
_SPEECH_TYPES = dict.fromkeys(sorted(set(media.SPEECH_FORMATS.values())), AUDIO)

_OPS: dict[str, dict[str, Op]] = {
    "inference.ChatCompletionsHandler": {
        "post": Op(
            "Create a chat completion (streamed as server-sent events with stream: true).",
            _ref("ChatCompletion"),
            body="ChatCompletionRequest",
            other_types={"text/event-stream": SSE},
        )
    },
    "inference.CompletionsHandler": {
        "post": Op(
            "Create a text completion (legacy); chat-only providers are translated.",
            _ref("Completion"),
            body="CompletionRequest",
            other_types={"text/event-stream": SSE},
        )
    },
    "inference.EmbeddingsHandler": {
        "post": Op("Create embeddings.", _ref("EmbeddingList"), body="EmbeddingRequest")
    },
    "health.LiveHandler": {"get": Op("Liveness: the process answers.", _ref("Health"))},
    "health.ReadyHandler": {"get": Op("Readiness: the store answers.", _ref("Health"))},
    "root.RootHandler": {
        "get": Op(
            "The bare address: a browser (Accept: text/html) is redirected to the web UI "
            "(302 to /ui/); other clients get the gateway's name, version and links.",
            {
                "type": "object",
                "required": ["name", "version", "links"],
                "properties": {
                    "name": STRING,
                    "version": STRING,
                    "links": {"type": "object", "additionalProperties": STRING},
                },
            },
        )
    },
    "models.ModelListHandler": {"get": Op("The models this key may use.", _ref("ModelList"))},
    "models.ModelHandler": {"get": Op("One model this key may use.", _ref("Model"))},
    "media.ImagesHandler": {"post": Op("Generate images.", _ref("ImageList"), body="ImageRequest")},
    "media.TranscriptionHandler": {
        "post": Op(
            "Transcribe audio (multipart upload).",
            _ref("Transcript"),
            body="AudioUpload",
            body_type="multipart/form-data",
            other_types=_TRANSCRIPT_TYPES,
        )
    },
    "media.TranslationHandler": {
        "post": Op(
            "Translate audio into English text (multipart upload).",
            _ref("Transcript"),
            body="AudioUpload",
            body_type="multipart/form-data",
            other_types=_TRANSCRIPT_TYPES,
        )
    },
    "media.SpeechHandler": {
        "post": Op(
            "Text to speech: audio bytes.", None, body="SpeechRequest", other_types=_SPEECH_TYPES
        )
    },
    "media.SpeechStreamHandler": {
        "post": Op(
            "Text to speech, streamed: raw audio, or server-sent events.",
            None,
            body="SpeechStreamRequest",
            other_types={**_SPEECH_TYPES, "text/event-stream": SSE},
        )
    },
    "realtime.RealtimeSessionsHandler": {
        "post": Op(
            "Create a realtime session and its one-use client secret.",
            _ref("RealtimeSession"),
            body="RealtimeSessionRequest",
        )
    },
    "realtime.RealtimeSocketHandler": {
        "get": Op(
            "The realtime WebSocket (upgrade only): with a virtual key and ?model=, or at a "
            "session's URL with its client secret.",
            None,
            status=101,
            query=(_q("model", STRING),),
        )
    },
    "admin.KeysHandler": {
        "get": Op(
            "List virtual keys.",
            _page(_ref("Key")),
            query=(
                *PAGE,
                _q("name", STRING),
                _q("enabled", BOOL),
                _q("group", STRING),
            ),
        ),
        "post": Op("Create a virtual key.", _ref("KeyWithSecret"), 201, body="KeyCreate"),
    },
    "admin.KeyRotateHandler": {
        "post": Op("Replace a key's secret; the old one stops working.", _ref("KeyWithSecret"))
    },
    "admin_limits.KeySpendHandler": {
        "post": Op("Set or adjust a key's spend this period.", _ref("Key"), body="SpendUpdate")
    },
    "admin.KeyHandler": {
        "get": Op("One key.", _ref("Key")),
        "patch": Op("Change a key.", _ref("Key"), body="KeyUpdate"),
        "delete": Op("Delete a key.", _ref("Deleted")),
    },
    "admin.ProvidersHandler": {
        "get": Op("List providers.", _page(_ref("Provider")), query=PAGE),
        "post": Op("Add a provider.", _ref("Provider"), 201, body="ProviderCreate"),
    },
    "admin.ProviderHandler": {
        "get": Op("One provider.", _ref("Provider")),
        "patch": Op("Change a provider.", _ref("Provider"), body="ProviderUpdate"),
        "delete": Op("Delete a provider no model uses.", _ref("Deleted")),
    },
    "admin.ModelsAdminHandler": {
        "get": Op("List model mappings.", _page(_ref("ModelMapping")), query=PAGE),
        "post": Op("Add a model mapping.", _ref("ModelMapping"), 201, body="ModelCreate"),
    },
    "admin.ModelAdminHandler": {
        "get": Op("One model mapping.", _ref("ModelMapping")),
        "patch": Op("Change a model mapping.", _ref("ModelMapping"), body="ModelUpdate"),
        "delete": Op("Delete a model mapping.", _ref("Deleted")),
    },
    "admin_limits.GroupsHandler": {
        "get": Op("List groups.", _page(_ref("Group")), query=PAGE),
        "post": Op("Create a group.", _ref("Group"), 201, body="GroupCreate"),
    },
    "admin_limits.GroupSpendHandler": {
        "post": Op("Set or adjust a group's spend.", _ref("Group"), body="SpendUpdate")
    },
    "admin_limits.GroupHandler": {
        "get": Op("One group.", _ref("Group")),
        "patch": Op("Change a group.", _ref("Group"), body="GroupUpdate"),
        "delete": Op("Delete a group.", _ref("Deleted")),
    },
    "admin_limits.AlertsHandler": {
        "get": Op("Budget alerts, newest first.", _page(ANY_OBJECT), query=PAGE)
    },
    "admin_usage.LogsHandler": {
        "get": Op(
            "Request logs, newest first.",
            _page(ANY_OBJECT),
            query=(
                *PAGE,
                *(
                    _q(n, STRING)
                    for n in ("key_id", "model", "user", "provider", "endpoint", "request_id")
                ),
                _q("status", {"type": "string", "pattern": "^[0-9]+$"}),
                _q("since", {"type": "string", "format": "date-time"}),
                _q("until", {"type": "string", "format": "date-time"}),
            ),
        )
    },
    "admin_usage.UsageHandler": {
        "get": Op(
            "Spend and tokens from the daily rollups, optionally grouped.",
            _ref("UsageReport"),
            query=(
                *PAGE,
                _q("key_id", STRING),
                _q("model", STRING),
                _q("user", STRING),
                _q("start", {"type": "string", "format": "date"}),
                _q("end", {"type": "string", "format": "date"}),
                _q("group_by", {"enum": ["day", "key", "model", "user"]}),
            ),
        )
    },
    "admin_usage.MetricsHandler": {
        "get": Op(
            "Operational counters in Prometheus' text format.",
            None,
            other_types={"text/plain": TEXT},
        )
    },
    "metrics.PrometheusHandler": {
        "get": Op(
            "Prometheus metrics (text exposition format). Open unless CONDUIT_METRICS_TOKEN "
            "is set (then Authorization: Bearer <token>); with CONDUIT_METRICS_PORT set, "
            "served on that port only (404 here).",
            None,
            other_types={"text/plain": TEXT},
            also=(401, 404),
        )
    },
}


def _kind(path: str) -> str:
    if path.startswith("/admin/") or (
        path.startswith("/ui/api/") and path != "/ui/api/login"
    ):  # the web UI's API: a UI session, which only the master key opens
        return "admin"
    if path.startswith("/v1/"):
        return "client"
    return "public"


def _operation(path: str, op: Op, params: Sequence[str], op_id: str) -> Json:
    kind = _kind(path)
    responses: Json = {}
    content: Json = {}
    if op.ok is not None:
        content["application/json"] = {"schema": op.ok}
    content.update({t: {"schema": s} for t, s in op.other_types.items()})
    responses[str(op.status)] = {"description": op.summary}
    if content:
        responses[str(op.status)]["content"] = content
    errors = {"admin": ADMIN_ERRORS, "client": CLIENT_ERRORS}.get(kind, (500, 503))
    for code in sorted({*errors, *op.also}):
        responses[str(code)] = {"$ref": f"#/components/responses/{op.envelope}{code}"}
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
        "security": [{"masterKey": []}]
        if kind == "admin"
        else [{"virtualKey": []}]
        if kind == "client"
        else [],
    }
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {op.body_type: {"schema": _ref(op.body)}},
        }
    return out


_GROUP = re.compile(r"\((?:[^()\\]|\\.)*\)")


def _template(pattern: str, names: Sequence[str]) -> str:
    """``/admin/v1/keys/([^/]+)/rotate`` -> ``/admin/v1/keys/{key_id}/rotate``;
    ``/openapi\\.json`` -> ``/openapi.json``."""
    parts = iter(names)
    path = _GROUP.sub(lambda _: "{" + next(parts) + "}", pattern)
    return re.sub(r"\\(.)", r"\1", path)  # an escaped character is itself


def handler_name(handler: type[tornado.web.RequestHandler]) -> str:
    return handler.__module__.rsplit(".", 1)[-1] + "." + handler.__qualname__


def _undescribed(handler: type[tornado.web.RequestHandler]) -> dict[str, Op]:
    """A route added without a description is still listed, with its methods and auth;
    tests/test_openapi.py fails while any route is described only this way."""
    if handler is OpenApiHandler:
        return {"get": Op("This document.", ANY_OBJECT)}
    allowed = getattr(handler, "allowed_methods", None)
    methods = allowed() if allowed is not None else ("GET",)
    return {m.lower(): Op(UNDESCRIBED, ANY_OBJECT) for m in methods}


UNDESCRIBED = "Not described yet."


def _errors(prefix: str, envelope: str) -> Json:
    """An error response per status, in one envelope (Op.envelope names the prefix)."""
    return {
        f"{prefix}{code}": {
            "description": reason,
            "content": {"application/json": {"schema": _ref(envelope)}},
        }
        for code, reason in _REASONS.items()
    }


def build(table: Sequence[Route]) -> Json:
    """The document for a route table (as ``routes.routes()`` gives it, unprefixed)."""
    paths: Json = {}
    for pattern, handler in table:
        name = handler_name(handler)
        ops = _OPS.get(name) or _undescribed(handler)
        groups = len(_GROUP.findall(pattern))
        names = _PARAMS.get(name, ())[:groups]
        if len(names) != groups:
            raise ValueError(f"{pattern}: name its path parameters in openapi._PARAMS")
        path = _template(pattern, names)
        item = paths.setdefault(path, {})
        for method, op in ops.items():
            op_id = method + "_" + re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_")
            item[method] = _operation(path, op, names, op_id)
    components_schemas = {**_CLIENT_SCHEMAS, **_ADMIN_VIEWS, **_model_schemas()}
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
            "securitySchemes": {
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
            },
            "schemas": components_schemas,
            "responses": {**_errors("E", "ErrorResponse"), **_errors("A", "AnthropicError")},
        },
    }


# -- Responses, Conversations, Messages, moderations, rerank, realtime secrets, web UI --------

_OBJ_ARRAY: Json = {"type": "array", "items": ANY_OBJECT}
_LIST: Json = {
    "type": "object",
    "required": ["object", "data", "has_more"],
    "properties": {
        "object": {"const": "list"},
        "data": _OBJ_ARRAY,
        "first_id": _nullable(STRING),
        "last_id": _nullable(STRING),
        "has_more": {"type": "boolean"},
    },
}
_METADATA: Json = {"type": "object", "additionalProperties": {"type": "string"}}

_CLIENT_SCHEMAS.update(
    {
        "ResponseRequest": {
            "type": "object",
            "required": ["model"],
            "properties": {
                "model": MODEL,
                "input": {"anyOf": [STRING, _OBJ_ARRAY]},
                "instructions": {"anyOf": [STRING, _OBJ_ARRAY, {"type": "null"}]},
                "stream": {"type": "boolean"},
                "store": {"type": "boolean"},
                "background": {"type": "boolean"},
                "previous_response_id": STRING,
                "conversation": {"anyOf": [STRING, ANY_OBJECT]},
                "tools": _OBJ_ARRAY,
                "text": ANY_OBJECT,
                "max_output_tokens": {"type": "integer"},
                "temperature": {"type": "number"},
                "top_p": {"type": "number"},
                "metadata": _METADATA,
                "user": STRING,
            },
        },
        "Response": {
            "type": "object",
            "required": ["id", "object", "created_at", "status", "model", "output"],
            "properties": {
                "id": STRING,
                "object": {"const": "response"},
                "status": {
                    "enum": [
                        "completed",
                        "failed",
                        "in_progress",
                        "cancelled",
                        "queued",
                        "incomplete",
                    ]
                },
                "model": STRING,
                "output": _OBJ_ARRAY,
                "usage": ANY_OBJECT,
            },
        },
        "ResponseDeleted": {
            "type": "object",
            "required": ["id", "object", "deleted"],
            "properties": {
                "id": STRING,
                "object": {"const": "response"},
                "deleted": {"const": True},
            },
        },
        "InputTokens": {
            "type": "object",
            "required": ["object", "input_tokens"],
            "properties": {
                "object": {"const": "response.input_tokens"},
                "input_tokens": {"type": "integer", "minimum": 0},
            },
        },
        "ItemList": _LIST,
        "Conversation": {
            "type": "object",
            "required": ["id", "object", "created_at", "metadata"],
            "properties": {
                "id": STRING,
                "object": {"const": "conversation"},
                "created_at": {"type": "integer"},
                "metadata": _METADATA,
            },
        },
        "ConversationRequest": {
            "type": "object",
            "properties": {"items": {**_OBJ_ARRAY, "maxItems": 20}, "metadata": _METADATA},
        },
        "ConversationUpdate": {
            "type": "object",
            "required": ["metadata"],
            "properties": {"metadata": _METADATA},
        },
        "ConversationItemsRequest": {
            "type": "object",
            "required": ["items"],
            "properties": {"items": {**_OBJ_ARRAY, "minItems": 1, "maxItems": 20}},
        },
        "ConversationDeleted": {
            "type": "object",
            "required": ["id", "object", "deleted"],
            "properties": {
                "id": STRING,
                "object": {"const": "conversation.deleted"},
                "deleted": {"const": True},
            },
        },
        "MessagesRequest": {
            "type": "object",
            "required": ["model", "max_tokens", "messages"],
            "properties": {
                "model": MODEL,
                "max_tokens": {"type": "integer", "minimum": 1},
                "messages": {**_OBJ_ARRAY, "minItems": 1},
                "system": {"anyOf": [STRING, _OBJ_ARRAY]},
                "stream": {"type": "boolean"},
                "tools": _OBJ_ARRAY,
                "tool_choice": ANY_OBJECT,
                "stop_sequences": {"type": "array", "items": STRING},
                "temperature": {"type": "number"},
                "metadata": ANY_OBJECT,
            },
        },
        "Message": {
            "type": "object",
            "required": ["id", "type", "role", "model", "content", "stop_reason", "usage"],
            "properties": {
                "id": STRING,
                "type": {"const": "message"},
                "role": {"const": "assistant"},
                "model": STRING,
                "content": _OBJ_ARRAY,
                "stop_reason": _nullable(STRING),
                "usage": ANY_OBJECT,
            },
        },
        "MessageTokens": {
            "type": "object",
            "required": ["input_tokens"],
            "properties": {"input_tokens": {"type": "integer", "minimum": 0}},
        },
        "AnthropicError": {
            "type": "object",
            "required": ["type", "error"],
            "properties": {
                "type": {"const": "error"},
                "error": {
                    "type": "object",
                    "required": ["type", "message"],
                    "properties": {"type": STRING, "message": STRING},
                },
            },
        },
        "ModerationRequest": {
            "type": "object",
            "required": ["input"],
            "properties": {"model": MODEL, "input": {"anyOf": [STRING, _OBJ_ARRAY]}},
        },
        "Moderation": {
            "type": "object",
            "required": ["id", "model", "results"],
            "properties": {"id": STRING, "model": STRING, "results": _OBJ_ARRAY},
        },
        "RerankRequest": {
            "type": "object",
            "required": ["model", "query", "documents"],
            "properties": {
                "model": MODEL,
                "query": STRING,
                "documents": {"type": "array", "items": {"anyOf": [STRING, ANY_OBJECT]}},
                "top_n": {"type": "integer", "minimum": 1},
            },
        },
        "Rerank": {
            "type": "object",
            "required": ["results"],
            "properties": {"model": STRING, "results": _OBJ_ARRAY},
        },
        "ClientSecretRequest": {
            "type": "object",
            "properties": {"session": ANY_OBJECT, "expires_after": ANY_OBJECT},
        },
        "ClientSecret": {
            "type": "object",
            "required": ["value", "expires_at", "session"],
            "properties": {
                "value": STRING,
                "expires_at": {"type": "integer"},
                "session": ANY_OBJECT,
            },
        },
    }
)

_ITEM_PAGE = (
    _q("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
    _q("order", {"enum": ["asc", "desc"]}),
    _q("after", STRING),
)
_UI_FILES = {
    t: {"type": "string"}
    for t in (
        "text/html; charset=utf-8",
        "text/css; charset=utf-8",
        "text/javascript; charset=utf-8",
        "image/svg+xml",
    )
}

_PARAMS.update(
    {
        "responses.ResponseHandler": ("response_id",),
        "responses.ResponseCancelHandler": ("response_id",),
        "responses.InputItemsHandler": ("response_id",),
        "conversations.ConversationHandler": ("conversation_id",),
        "conversations.ConversationItemsHandler": ("conversation_id",),
        "conversations.ConversationItemHandler": ("conversation_id", "item_id"),
        "handlers.UiPageHandler": ("file",),
        "handlers.ProviderTestHandler": ("provider",),
    }
)
_OPS.update(
    {
        "responses.ResponsesHandler": {
            "post": Op(
                "Create a response: the Responses API, on every provider "
                "(streamed as server-sent events with stream: true).",
                _ref("Response"),
                body="ResponseRequest",
                other_types={"text/event-stream": SSE},
            )
        },
        "responses.InputTokensHandler": {
            "post": Op(
                "Count a request's input tokens (the gateway's estimate).",
                _ref("InputTokens"),
                body="ResponseRequest",
            )
        },
        "responses.ResponseHandler": {
            "get": Op("A stored response of this key.", _ref("Response")),
            "delete": Op("Delete a stored response.", _ref("ResponseDeleted")),
        },
        "responses.ResponseCancelHandler": {
            "post": Op("Cancel a background response.", _ref("Response"))
        },
        "responses.InputItemsHandler": {
            "get": Op("The input items of a stored response.", _ref("ItemList"), query=_ITEM_PAGE)
        },
        "conversations.ConversationsHandler": {
            "post": Op("Create a conversation.", _ref("Conversation"), body="ConversationRequest")
        },
        "conversations.ConversationHandler": {
            "get": Op("A conversation of this key.", _ref("Conversation")),
            "post": Op(
                "Update a conversation's metadata.",
                _ref("Conversation"),
                body="ConversationUpdate",
            ),
            "delete": Op("Delete a conversation and its items.", _ref("ConversationDeleted")),
        },
        "conversations.ConversationItemsHandler": {
            "get": Op("A conversation's items.", _ref("ItemList"), query=_ITEM_PAGE),
            "post": Op(
                "Add items to a conversation.", _ref("ItemList"), body="ConversationItemsRequest"
            ),
        },
        "conversations.ConversationItemHandler": {
            "get": Op("One item of a conversation.", ANY_OBJECT),
            "delete": Op("Delete an item; answers the conversation.", _ref("Conversation")),
        },
        "messages.MessagesHandler": {
            "post": Op(
                "Anthropic's Messages API, on every provider (x-api-key or Bearer; "
                "streamed with stream: true; errors in Anthropic's envelope).",
                _ref("Message"),
                body="MessagesRequest",
                other_types={"text/event-stream": SSE},
                envelope="A",
            )
        },
        "messages.CountTokensHandler": {
            "post": Op(
                "Count a Messages request's input tokens (the gateway's estimate).",
                _ref("MessageTokens"),
                body="MessagesRequest",
                envelope="A",
            )
        },
        "classify.ModerationsHandler": {
            "post": Op(
                "Classify content (moderation).", _ref("Moderation"), body="ModerationRequest"
            )
        },
        "classify.RerankHandler": {
            "post": Op("Rerank documents for a query.", _ref("Rerank"), body="RerankRequest")
        },
        "realtime.RealtimeClientSecretsHandler": {
            "post": Op(
                "Mint a single-use client secret for a browser's realtime session (GA).",
                _ref("ClientSecret"),
                body="ClientSecretRequest",
            )
        },
        "handlers.LoginHandler": {
            "post": Op(
                "Web UI: sign in with the master key.", ANY_OBJECT, also=(400, 401, 413, 429)
            )
        },
        "handlers.LogoutHandler": {"post": Op("Web UI: sign out.", ANY_OBJECT)},
        "handlers.SessionHandler": {"get": Op("Web UI: this browser's session.", ANY_OBJECT)},
        "handlers.HealthHandler": {"get": Op("Web UI: the gateway at a glance.", ANY_OBJECT)},
        "handlers.ProviderTestHandler": {
            "post": Op("Web UI: one cheap call to a provider.", ANY_OBJECT)
        },
        "handlers.UiRedirectHandler": {"get": Op("Web UI: to /ui/.", None, status=302)},
        "handlers.UiPageHandler": {
            "get": Op("Web UI: its page and assets.", None, other_types=_UI_FILES, also=(404,))
        },
    }
)

_DEPLOYMENT_HEALTH: Json = {
    "type": "object",
    "required": ["provider", "deployment", "models", "healthy", "cooldown"],
    "properties": {
        "provider": STRING,
        "deployment": STRING,
        "models": {"type": "array", "items": STRING},
        "health_check": {"type": "boolean"},
        "healthy": _nullable({"type": "boolean"}),
        "checked_at": _nullable({"type": "string", "format": "date-time"}),
        "last_error": _nullable(STRING),
        "cooldown": {"type": "boolean"},
        "cooldown_remaining": {"type": "number", "minimum": 0},
        "failures": {"type": "integer", "minimum": 0},
        "in_flight": {"type": "integer"},
        "latency_ms": _nullable({"type": "number"}),
    },
}
_OPS["admin_health.DeploymentHealthHandler"] = {
    "get": Op(
        "Each deployment's active health check (CONDUIT_HEALTH_CHECK_INTERVAL) and cooldown.",
        {
            "type": "object",
            "required": ["object", "data"],
            "properties": {
                "object": {"const": "list"},
                "data": {"type": "array", "items": _DEPLOYMENT_HEALTH},
                "health_check_interval": {"type": "number", "minimum": 0},
            },
        },
    )
}


# -- Image edits and variations, realtime calls (WebRTC), the Responses WebSocket ------------

_IMAGE_FILE: Json = {"type": "string", "contentMediaType": "application/octet-stream"}
_CLIENT_SCHEMAS.update(
    {
        "ImageEditUpload": {
            "type": "object",
            "required": ["model", "prompt", "image"],
            "properties": {
                "model": MODEL,
                "prompt": {"type": "string", "pattern": r"\S"},
                "image": _IMAGE_FILE,
                "image[]": {"type": "array", "items": _IMAGE_FILE, "maxItems": 16},
                "mask": _IMAGE_FILE,
                "n": {"type": "integer", "minimum": 1, "maximum": 10},
                "response_format": {"enum": list(media.IMAGE_FORMATS)},
                "size": STRING,
                "quality": STRING,
                "background": STRING,
                "output_format": STRING,
                "input_fidelity": STRING,
                "user": STRING,
            },
        },
        "ImageVariationUpload": {
            "type": "object",
            "required": ["model", "image"],
            "properties": {
                "model": MODEL,
                "image": _IMAGE_FILE,
                "n": {"type": "integer", "minimum": 1, "maximum": 10},
                "response_format": {"enum": list(media.IMAGE_FORMATS)},
                "size": STRING,
                "user": STRING,
            },
        },
    }
)
_CLIENT_SCHEMAS["RealtimeCallUpload"] = {
    "type": "object",
    "required": ["sdp"],
    "properties": {
        "sdp": {"type": "string", "description": "The WebRTC SDP offer (v=0 ...)."},
        "session": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": "The GA session object as JSON (type realtime, model, ...).",
        },
    },
}
_PARAMS["realtime.RealtimeCallHangupHandler"] = ("call_id",)
_OPS["realtime.RealtimeSocketHandler"]["get"] = replace(
    _OPS["realtime.RealtimeSocketHandler"]["get"],
    summary="The realtime WebSocket (upgrade only): with a virtual key and ?model=, at a "
    "session's URL with its client secret, or with ?call_id= as the sideband of a WebRTC "
    "call this key made.",
    query=(_q("model", STRING), _q("call_id", STRING)),
)
_OPS["responses.ResponseHandler"]["get"] = Op(
    "A stored response of this key; with stream=true, the events of a response created "
    "with background and stream, after starting_after, live until it ends.",
    _ref("Response"),
    query=(
        _q("stream", BOOL),
        _q("starting_after", {"type": "integer", "minimum": -1, "maximum": 2**31 - 1}),
    ),
    other_types={"text/event-stream": SSE},
)
_OPS["responses.ResponsesHandler"]["get"] = Op(
    "The Responses WebSocket mode (client.responses.connect(), upgrade only): send "
    "response.create events, receive the events of the SSE stream as JSON messages. A "
    "GET without the upgrade answers 426.",
    None,
    status=101,
    also=(426,),
)
_OPS.update(
    {
        "realtime.RealtimeCallsHandler": {
            "post": Op(
                "Start a WebRTC realtime call: the SDP offer (multipart sdp + session, or "
                "application/sdp with a client secret) in, the provider's SDP answer out "
                "(201, Location names the call).",
                None,
                status=201,
                body="RealtimeCallUpload",
                body_type="multipart/form-data",
                other_types={"application/sdp": TEXT},
                also=(409,),
            )
        },
        "realtime.RealtimeCallHangupHandler": {
            "post": Op("End a WebRTC realtime call this key made.", None, also=(409,))
        },
        "media.ImageEditHandler": {
            "post": Op(
                "Edit images (multipart: image or image[], optional mask); priced per image.",
                _ref("ImageList"),
                body="ImageEditUpload",
                body_type="multipart/form-data",
            )
        },
        "media.ImageVariationHandler": {
            "post": Op(
                "Variations of one square PNG (multipart); priced per image.",
                _ref("ImageList"),
                body="ImageVariationUpload",
                body_type="multipart/form-data",
            )
        },
    }
)


class OpenApiHandler(PublicHandler):
    """Unauthenticated, like the health checks: it says what exists, never what is in it.
    Under a mount (Jupyter) the document names the prefix as its server."""

    async def get(self) -> None:
        # The route matches the whole path, so there is one prefix per mount.
        prefix = self.request.path[: -len("/openapi.json")]
        body = _served.get(prefix)
        if body is None:
            # pydantic takes ~0.1 s to describe the admin models: not on the event loop.
            body = await asyncio.to_thread(_serialized, prefix)
            _served[prefix] = body
        self.finish(body)


_served: dict[str, bytes] = {}


def _serialized(prefix: str) -> bytes:
    from .routes import routes  # the table imports this module's handler

    doc = build(routes())
    if prefix:
        doc["servers"] = [{"url": prefix}]
    return dumps(doc)
