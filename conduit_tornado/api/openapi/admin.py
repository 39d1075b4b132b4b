"""The admin API (the master key): keys, providers, model mappings, groups, spend, alerts,
logs, usage, counters and deployment health. Request bodies are the pydantic models the
handlers validate with; the views are what the handlers answer (never a secret)."""

from __future__ import annotations

import typing

from pydantic import BaseModel

from conduit_tornado.core import schemas

from .common import ANY_OBJECT, BOOL, PAGE, STRING, TEXT, Json, Op, nullable, page, q, ref

#: Dollars, rounded to 1e-10 (core/money.py) so sums print without float noise.
MONEY: Json = {"type": "number"}
_COUNTS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "total_tokens",
    "unpriced_requests",
    "estimated_requests",
)
#: One row of a usage report (or its totals): counts are whole numbers.
USAGE_ROW: Json = {
    "type": "object",
    "properties": {**{name: {"type": "integer"} for name in _COUNTS}, "cost": MONEY},
}

VIEWS: dict[str, Json] = {
    "Key": {
        "type": "object",
        "required": ["id", "name", "prefix", "enabled", "spend", "total_spend"],
        "properties": {
            "id": STRING,
            "name": STRING,
            "prefix": STRING,
            "enabled": {"type": "boolean"},
            "spend": MONEY,
            "total_spend": MONEY,
        },
        "not": {"required": ["hash"]},
    },
    "KeyWithSecret": {
        "allOf": [
            ref("Key"),
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
            "base_url": nullable(STRING),
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
        "required": ["name", "spend", "total_spend"],
        "properties": {"name": STRING, "spend": MONEY, "total_spend": MONEY},
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
            "data": {"type": "array", "items": USAGE_ROW},
            "totals": USAGE_ROW,
            "alerts": {"type": "array", "items": ANY_OBJECT},
        },
    },
}

BODY_MODELS: tuple[type[BaseModel], ...] = (
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


def model_schemas() -> dict[str, Json]:
    """The admin bodies as pydantic describes them, their nested models hoisted into
    components (pydantic puts them under each schema's own $defs)."""
    out: dict[str, Json] = {}
    for model in BODY_MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out


PARAMS: dict[str, tuple[str, ...]] = {
    "admin.KeyHandler": ("key_id",),
    "admin.KeyRotateHandler": ("key_id",),
    "admin_limits.KeySpendHandler": ("key_id",),
    "admin.ProviderHandler": ("provider",),
    "admin.ModelAdminHandler": ("model",),
    "admin_limits.GroupHandler": ("group",),
    "admin_limits.GroupSpendHandler": ("group",),
}

_DEPLOYMENT_HEALTH: Json = {
    "type": "object",
    "required": ["provider", "deployment", "models", "healthy", "cooldown"],
    "properties": {
        "provider": STRING,
        "deployment": STRING,
        "models": {"type": "array", "items": STRING},
        "health_check": {"type": "boolean"},
        "healthy": nullable({"type": "boolean"}),
        "checked_at": nullable({"type": "string", "format": "date-time"}),
        "last_error": nullable(STRING),
        "cooldown": {"type": "boolean"},
        "cooldown_remaining": {"type": "number", "minimum": 0},
        "failures": {"type": "integer", "minimum": 0},
        "in_flight": {"type": "integer"},
        "latency_ms": nullable({"type": "number"}),
    },
}

OPS: dict[str, dict[str, Op]] = {
    "admin.KeysHandler": {
        "get": Op(
            "List virtual keys.",
            page(ref("Key")),
            query=(
                *PAGE,
                q("name", STRING),
                q("enabled", BOOL),
                q("group", STRING),
            ),
        ),
        "post": Op("Create a virtual key.", ref("KeyWithSecret"), 201, body="KeyCreate"),
    },
    "admin.KeyRotateHandler": {
        "post": Op("Replace a key's secret; the old one stops working.", ref("KeyWithSecret"))
    },
    "admin_limits.KeySpendHandler": {
        "post": Op("Set or adjust a key's spend this period.", ref("Key"), body="SpendUpdate")
    },
    "admin.KeyHandler": {
        "get": Op("One key.", ref("Key")),
        "patch": Op("Change a key.", ref("Key"), body="KeyUpdate"),
        "delete": Op("Delete a key.", ref("Deleted")),
    },
    "admin.ProvidersHandler": {
        "get": Op("List providers.", page(ref("Provider")), query=PAGE),
        "post": Op("Add a provider.", ref("Provider"), 201, body="ProviderCreate"),
    },
    "admin.ProviderHandler": {
        "get": Op("One provider.", ref("Provider")),
        "patch": Op("Change a provider.", ref("Provider"), body="ProviderUpdate"),
        "delete": Op("Delete a provider no model uses.", ref("Deleted")),
    },
    "admin.ModelsAdminHandler": {
        "get": Op("List model mappings.", page(ref("ModelMapping")), query=PAGE),
        "post": Op("Add a model mapping.", ref("ModelMapping"), 201, body="ModelCreate"),
    },
    "admin.ModelAdminHandler": {
        "get": Op("One model mapping.", ref("ModelMapping")),
        "patch": Op("Change a model mapping.", ref("ModelMapping"), body="ModelUpdate"),
        "delete": Op("Delete a model mapping.", ref("Deleted")),
    },
    "admin_limits.GroupsHandler": {
        "get": Op("List groups.", page(ref("Group")), query=PAGE),
        "post": Op("Create a group.", ref("Group"), 201, body="GroupCreate"),
    },
    "admin_limits.GroupSpendHandler": {
        "post": Op("Set or adjust a group's spend.", ref("Group"), body="SpendUpdate")
    },
    "admin_limits.GroupHandler": {
        "get": Op("One group.", ref("Group")),
        "patch": Op("Change a group.", ref("Group"), body="GroupUpdate"),
        "delete": Op("Delete a group.", ref("Deleted")),
    },
    "admin_limits.AlertsHandler": {
        "get": Op("Budget alerts, newest first.", page(ANY_OBJECT), query=PAGE)
    },
    "admin_usage.LogsHandler": {
        "get": Op(
            "Request logs, newest first.",
            page(ANY_OBJECT),
            query=(
                *PAGE,
                *(
                    q(n, STRING)
                    for n in ("key_id", "model", "user", "provider", "endpoint", "request_id")
                ),
                q("status", {"type": "string", "pattern": "^[0-9]+$"}),
                q("since", {"type": "string", "format": "date-time"}),
                q("until", {"type": "string", "format": "date-time"}),
            ),
        )
    },
    "admin_usage.UsageHandler": {
        "get": Op(
            "Spend and tokens from the daily rollups, optionally grouped.",
            ref("UsageReport"),
            query=(
                *PAGE,
                q("key_id", STRING),
                q("model", STRING),
                q("user", STRING),
                q("start", {"type": "string", "format": "date"}),
                q("end", {"type": "string", "format": "date"}),
                q("group_by", {"enum": ["day", "key", "model", "user"]}),
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
    "admin_health.DeploymentHealthHandler": {
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
    },
}
