"""Admin routes for limits and budgets: groups, spend adjustments, budget alerts."""

from __future__ import annotations

from conduit_tornado.admission.groups import group_view
from conduit_tornado.admission.keys import key_view
from conduit_tornado.core.errors import not_found
from conduit_tornado.core.schemas import GroupCreate, GroupUpdate, SpendUpdate
from conduit_tornado.metering.alerts import ALERTS

from .admin import PagedHandler
from .base import AdminHandler


class GroupsHandler(PagedHandler):
    async def get(self) -> None:
        offset, limit = self.page()
        docs, total = await self.ctx.groups.list(offset, limit)
        self.send_page([group_view(d) for d in docs], total, offset, limit)

    async def post(self) -> None:
        doc = await self.ctx.groups.create(self.parse(GroupCreate))
        self.send_json(group_view(doc), 201)


class GroupHandler(AdminHandler):
    async def get(self, name: str) -> None:
        self.send_json(group_view(await self.ctx.groups.get(name)))

    async def patch(self, name: str) -> None:
        doc = await self.ctx.groups.update(name, self.parse(GroupUpdate))
        self.ctx.limiter.forget_group(name)
        self.send_json(group_view(doc))

    async def delete(self, name: str) -> None:
        await self.ctx.groups.delete(name)
        self.ctx.limiter.forget_group(name)
        self.send_json({"id": name, "object": "group", "deleted": True})


class KeySpendHandler(AdminHandler):
    """POST {"spend": 0} resets the current period's spend; {"add": -1.5} refunds."""

    async def post(self, key_id: str) -> None:
        body = self.parse(SpendUpdate)
        doc = await self.ctx.keys.get(key_id)
        updated = await self.ctx.limiter.budgets.adjust_spend(
            "keys", doc, spend=body.spend, add=body.add
        )
        if updated is None:
            raise not_found(f"No key with id {key_id!r}.", code="key_not_found")
        self.ctx.keys.invalidate(key_id)
        self.send_json(key_view(updated))


class GroupSpendHandler(AdminHandler):
    async def post(self, name: str) -> None:
        body = self.parse(SpendUpdate)
        doc = await self.ctx.groups.get(name)
        updated = await self.ctx.limiter.budgets.adjust_spend(
            "groups", doc, spend=body.spend, add=body.add
        )
        if updated is None:
            raise not_found(f"No group {name!r}.", code="group_not_found")
        self.ctx.limiter.forget_group(name)
        self.send_json(group_view(updated))


class AlertsHandler(PagedHandler):
    async def get(self) -> None:
        offset, limit = self.page()
        store = self.ctx.store
        docs = await store.find(
            ALERTS, {}, sort="created_at", descending=True, offset=offset, limit=limit
        )
        items = [{k: v for k, v in d.items() if k != "_id"} for d in docs]
        self.send_page(items, await store.count(ALERTS, {}), offset, limit)
