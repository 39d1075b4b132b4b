"""The admin API under /admin/v1: keys, providers, model mappings (master key only)."""

from __future__ import annotations

from typing import Any

from conduit_tornado.admission.keys import key_view
from conduit_tornado.context import Context
from conduit_tornado.core.errors import ApiError
from conduit_tornado.core.schemas import (
    KeyCreate,
    KeyUpdate,
    ModelCreate,
    ModelUpdate,
    ProviderCreate,
    ProviderUpdate,
)
from conduit_tornado.routing.catalog import model_view, provider_view
from conduit_tornado.store import Doc

from .base import AdminHandler


class PagedHandler(AdminHandler):
    def page(self) -> tuple[int, int]:
        return self.int_arg("offset", 0, 0, 10**9), self.int_arg("limit", 100, 1, 1000)

    def send_page(self, items: list[dict[str, Any]], total: int, offset: int, limit: int) -> None:
        self.send_json(
            {
                "object": "list",
                "data": items,
                "total": total,
                "offset": offset,
                "limit": limit,
                "has_more": offset + len(items) < total,
            }
        )


async def check_allowed_models(ctx: Context, allowed: list[str] | None) -> None:
    """400 naming each entry of a key's allowed_models that is no model's name (a typo
    would leave the key unable to use the model meant). Patterns (with ``*``) may match
    models added later, so they are not checked."""
    names = [m for m in allowed or [] if "*" not in m]
    if not names:
        return
    await ctx.catalog.refresh()  # the newest models, as model creation checks providers
    unknown = [m for m in names if m not in ctx.catalog.models]
    if unknown:
        known = sorted(ctx.catalog.models)
        listed = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
        raise ApiError(
            400,
            f"allowed_models: no model is named {', '.join(repr(m) for m in unknown)} "
            + (f"(the models are: {listed})" if known else "(no models are configured yet)"),
            param="allowed_models",
            code="invalid_value",
        )


def _with_secret(doc: Doc, secret: str) -> dict[str, Any]:
    return {**key_view(doc), "key": secret}


class KeysHandler(PagedHandler):
    async def get(self) -> None:
        offset, limit = self.page()
        docs, total = await self.ctx.keys.list(
            name=self.get_query_argument("name", None),
            enabled=self.bool_arg("enabled"),
            group=self.get_query_argument("group", None),
            offset=offset,
            limit=limit,
        )
        self.send_page([key_view(d) for d in docs], total, offset, limit)

    async def post(self) -> None:
        body = self.parse(KeyCreate)
        if body.expires_at is not None and body.expires_at <= self.ctx.clock.now():
            raise ApiError(
                400,
                f"expires_at: {body.expires_at.isoformat()} is in the past; give a future "
                "date-time, or none for a key that does not expire",
                param="expires_at",
                code="invalid_value",
            )
        await check_allowed_models(self.ctx, body.allowed_models)
        secret, doc = await self.ctx.keys.create(body)
        self.send_json(_with_secret(doc, secret), 201)


class KeyHandler(AdminHandler):
    async def get(self, key_id: str) -> None:
        self.send_json(key_view(await self.ctx.keys.get(key_id)))

    async def patch(self, key_id: str) -> None:
        # (A past expires_at is allowed here: it is how a key is made to expire now.)
        body = self.parse(KeyUpdate)
        await check_allowed_models(self.ctx, body.allowed_models)
        self.send_json(key_view(await self.ctx.keys.update(key_id, body)))

    async def delete(self, key_id: str) -> None:
        await self.ctx.keys.delete(key_id)
        self.send_json({"id": key_id, "object": "key", "deleted": True})


class KeyRotateHandler(AdminHandler):
    async def post(self, key_id: str) -> None:
        secret, doc = await self.ctx.keys.rotate(key_id)
        self.send_json(_with_secret(doc, secret))


class ProvidersHandler(PagedHandler):
    async def get(self) -> None:
        offset, limit = self.page()
        docs, total = await self.ctx.catalog.list_providers(offset, limit)
        self.send_page([provider_view(d) for d in docs], total, offset, limit)

    async def post(self) -> None:
        doc = await self.ctx.catalog.create_provider(self.parse(ProviderCreate))
        self.send_json(provider_view(doc), 201)


class ProviderHandler(AdminHandler):
    async def get(self, ref: str) -> None:
        self.send_json(provider_view(await self.ctx.catalog.get_provider(ref)))

    async def patch(self, ref: str) -> None:
        doc = await self.ctx.catalog.update_provider(ref, self.parse(ProviderUpdate))
        self.send_json(provider_view(doc))

    async def delete(self, ref: str) -> None:
        await self.ctx.catalog.delete_provider(ref)
        self.send_json({"id": ref, "object": "provider", "deleted": True})


class ModelsAdminHandler(PagedHandler):
    async def get(self) -> None:
        offset, limit = self.page()
        docs, total = await self.ctx.catalog.list_models(offset, limit)
        self.send_page([model_view(d) for d in docs], total, offset, limit)

    async def post(self) -> None:
        doc = await self.ctx.catalog.create_model(self.parse(ModelCreate))
        self.send_json(model_view(doc), 201)


class ModelAdminHandler(AdminHandler):
    async def get(self, name: str) -> None:
        self.send_json(model_view(await self.ctx.catalog.get_model(name)))

    async def patch(self, name: str) -> None:
        doc = await self.ctx.catalog.update_model(name, self.parse(ModelUpdate))
        self.send_json(model_view(doc))

    async def delete(self, name: str) -> None:
        await self.ctx.catalog.delete_model(name)
        self.send_json({"id": name, "object": "model", "deleted": True})
