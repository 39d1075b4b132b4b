"""Groups (teams): shared limits and a shared budget for the keys that name them."""

from __future__ import annotations

from typing import Any

from conduit_tornado.core.clock import Clock
from conduit_tornado.core.errors import ApiError, not_found
from conduit_tornado.core.money import money
from conduit_tornado.core.schemas import GroupCreate, GroupUpdate
from conduit_tornado.store import SETTLED, Doc, DuplicateError, Store
from conduit_tornado.store.changes import GROUPS, note

COLLECTION = "groups"


def group_view(doc: Doc) -> dict[str, Any]:
    view = {"name": doc["_id"], **{k: v for k, v in doc.items() if k not in ("_id", SETTLED)}}
    view["spend"] = money(doc.get("spend"))  # sums of costs carry float noise
    view["total_spend"] = money(doc.get("total_spend"))
    return view


class GroupService:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def create(self, body: GroupCreate) -> Doc:
        now = self._clock.now()
        doc: Doc = {
            "_id": body.name,
            **body.model_dump(exclude={"name"}),
            "metadata": body.metadata or {},
            "spend": 0.0,
            "total_spend": 0.0,
            "period_start": now,
            "created_at": now,
            "updated_at": now,
        }
        try:
            await self._store.insert(COLLECTION, doc)
        except DuplicateError as exc:
            raise ApiError(
                409,
                f"A group named {body.name!r} already exists.",
                code="group_exists",
                param="name",
            ) from exc
        return doc

    async def get(self, name: str) -> Doc:
        doc = await self._store.get(COLLECTION, name)
        if doc is None:
            raise not_found(f"No group {name!r}.", code="group_not_found")
        return doc

    async def list(self, offset: int, limit: int) -> tuple[list[Doc], int]:
        docs = await self._store.find(COLLECTION, {}, offset=offset, limit=limit)
        return docs, await self._store.count(COLLECTION, {})

    async def update(self, name: str, body: GroupUpdate) -> Doc:
        fields = body.model_dump(exclude_unset=True)
        if "metadata" in fields and fields["metadata"] is None:
            fields["metadata"] = {}
        fields["updated_at"] = self._clock.now()
        doc = await self._store.update(COLLECTION, name, fields)
        if doc is None:
            raise not_found(f"No group {name!r}.", code="group_not_found")
        await note(self._store, GROUPS, name)  # other instances drop their cached copy
        return doc

    async def delete(self, name: str) -> None:
        if await self._store.count("keys", {"group": name}):
            raise ApiError(
                409,
                f"Group {name!r} still has keys; move or delete them first.",
                code="group_in_use",
            )
        if not await self._store.delete(COLLECTION, name):
            raise not_found(f"No group {name!r}.", code="group_not_found")
        await note(self._store, GROUPS, name)
