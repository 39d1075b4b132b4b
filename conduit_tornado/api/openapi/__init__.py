"""GET /openapi.json: an OpenAPI 3.1 description of the gateway's own routes.

Built from the route table, so a route added without a description here fails the build
(and tests/test_openapi.py) instead of going undocumented. The admin request bodies are the
pydantic models the handlers validate with (their ``model_json_schema()``); the client
routes are described by the subset of OpenAI's request fields the handlers check, leaving
the rest open, since unknown fields are passed on to the provider. Responses are described
as loosely as the handlers promise and no looser: every error is the envelope
``{"error": {"message", "type", "param", "code"}}``.

One module per area holds its schemas and operations (``inference``, ``responses``,
``realtime``, ``admin``, ``public``, ``ui``, ``hub``), written in ``common``'s vocabulary;
``document`` assembles them for a route table.
"""

from __future__ import annotations

import asyncio

from conduit_tornado.api.base import PublicHandler, dumps

from .document import OPS, PARAMS, UNDESCRIBED, Route, build, handler_name

# The tables by their former names (tests check them against the route table).
_OPS = OPS
_PARAMS = PARAMS


class OpenApiHandler(PublicHandler):
    """Unauthenticated, like the health checks: it says what exists, never what is in it.
    Under a mount (Jupyter) the document names the prefix as its server; in hub mode it
    describes the hub's routes too."""

    async def get(self) -> None:
        # The route matches the whole path, so there is one prefix per mount.
        prefix = self.request.path[: -len("/openapi.json")]
        key = (prefix, "conduit_hub" in self.settings)
        body = _served.get(key)
        if body is None:
            # pydantic takes ~0.1 s to describe the admin models: not on the event loop.
            body = await asyncio.to_thread(_serialized, *key)
            _served[key] = body
        self.finish(body)


_served: dict[tuple[str, bool], bytes] = {}


def _serialized(prefix: str, hub: bool = False) -> bytes:
    from conduit_tornado.api.routes import app_routes  # the table imports this module's handler

    doc = build(app_routes(hub=hub))
    if prefix:
        doc["servers"] = [{"url": prefix}]
    return dumps(doc)


__all__ = ["UNDESCRIBED", "OpenApiHandler", "Route", "build", "handler_name"]
