"""GET /v1/models and /v1/models/{id}: the virtual models the calling key may use."""

from __future__ import annotations

from typing import Any

from conduit_tornado.core.errors import ApiError
from conduit_tornado.routing.catalog import ModelRoute, Provider, capabilities

from .base import ClientHandler


def model_object(route: ModelRoute, providers: dict[str, Provider]) -> dict[str, Any]:
    return {
        "id": route.name,
        "object": "model",
        "created": int(route.created_at.timestamp()),
        "owned_by": "conduit",
        "capabilities": capabilities(route, providers),
    }


class ModelListHandler(ClientHandler):
    def get(self) -> None:
        data = [
            model_object(m, self.ctx.catalog.providers)
            for m in sorted(self.ctx.catalog.models.values(), key=lambda m: m.name)
            if m.enabled and self.key.allows_model(m.name)
        ]
        self.send_json({"object": "list", "data": data})


class ModelHandler(ClientHandler):
    def get(self, model_id: str) -> None:
        route = self.ctx.catalog.models.get(model_id)
        # A model the key may not use is reported as missing: no probing of the catalog.
        if route is None or not route.enabled or not self.key.allows_model(model_id):
            raise ApiError(
                404,
                f"The model '{model_id}' does not exist or you do not have access to it.",
                code="model_not_found",
                param="model",
            )
        self.send_json(model_object(route, self.ctx.catalog.providers))
