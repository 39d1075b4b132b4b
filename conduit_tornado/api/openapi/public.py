"""The routes open to anyone (or to a metrics token): the health checks, this document and
Prometheus' scrape. They say what runs and what exists, never what the gateway holds."""

from __future__ import annotations

from .common import ANY_OBJECT, STRING, TEXT, Json, Op, ref

SCHEMAS: dict[str, Json] = {
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"const": "ok"}, "store": STRING, "pid": {"type": "integer"}},
    },
}

OPS: dict[str, dict[str, Op]] = {
    "health.LiveHandler": {"get": Op("Liveness: the process answers.", ref("Health"))},
    "health.ReadyHandler": {"get": Op("Readiness: the store answers.", ref("Health"))},
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
    "openapi.OpenApiHandler": {"get": Op("This document.", ANY_OBJECT)},
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
