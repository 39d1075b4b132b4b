"""Conversations: /v1/conversations[/{id}] and /v1/conversations/{id}/items[/{item_id}].

A conversation is a list of items (messages, function calls and their outputs) owned by
the key that made it. ``POST /v1/responses`` with ``conversation`` reads it as the
history and appends the turn's input and output to it, on any backend. Items are one
document each (ordered by ``seq``), so a long conversation never makes one large
document and a page of items is one indexed read. A function call item carries its
call id outside the item text (``call``), and so does an output (``output_of``), so that
the calls an output answers, and the outputs a call has, are each one indexed read too.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import orjson

from conduit_tornado.core.errors import ApiError, quoted, wrong_prefix
from conduit_tornado.formats.responses import (
    append_item,
    input_items,
    new_id,
)
from conduit_tornado.routing.providers.base import Json
from conduit_tornado.store import MIGRATIONS, DuplicateError, Store

from .base import ClientHandler

CONVERSATIONS = "conversations"
ITEMS = "conversation_items"
#: Items one conversation may hold; a follow-up reads them all as its history.
MAX_ITEMS = 10_000
MAX_ITEMS_PER_CALL = 20
#: The MIGRATIONS document saying that backfill_lookups has run on a store.
_BACKFILLED = "conversation_item_lookups"
_BACKFILL_PAGE = 500

log = logging.getLogger("conduit.conversations")


def _item(doc: Json) -> Json:
    item: Json = orjson.loads(doc["item"])
    return item


def _lookups(item: Json) -> Json:
    """The fields an item's document carries beside its text, for the indexed lookups of a
    call's outputs and an output's call."""
    kind = item.get("type")
    if kind == "function_call":
        return {"call": item.get("call_id")}
    if kind == "function_call_output":
        return {"output_of": item.get("call_id")}
    return {}


def _not_found(conversation_id: str, param: str | None = None) -> ApiError:
    return ApiError(
        404,
        f"Conversation with id {quoted(conversation_id)} not found.",
        param=param,
        code="conversation_not_found",
    )


def checked_metadata(value: Any) -> Json:
    """OpenAI's metadata rule (responses and conversations): up to 16 string pairs."""
    if value is None:
        return {}
    if (
        not isinstance(value, dict)
        or len(value) > 16
        or not all(
            isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
            for k, v in value.items()
        )
    ):
        raise ApiError(
            400,
            "metadata must be an object of at most 16 string pairs (keys up to 64 characters, "
            "values up to 512).",
            param="metadata",
        )
    return value


def conversation_object(doc: Json) -> Json:
    return {
        "id": doc["_id"],
        "object": "conversation",
        "created_at": doc["created"],
        "metadata": doc.get("metadata") or {},
    }


def conversation_id(value: Any) -> str:
    """The ``conversation`` parameter of a response: an id, or an object with one."""
    if isinstance(value, dict):
        value = value.get("id")
    if not isinstance(value, str) or not value:
        raise ApiError(
            400, "conversation must be an id or an object with an id.", param="conversation"
        )
    if not value.startswith("conv_"):
        raise wrong_prefix("conversation", value, "conv")
    return value


async def owned_conversation(
    handler: ClientHandler, conv_id: str, param: str | None = None
) -> Json:
    doc = await handler.ctx.store.get(CONVERSATIONS, conv_id)
    if doc is None or doc.get("key") != handler.key.id:
        raise _not_found(conv_id, param)
    return doc


async def conversation_items(handler: ClientHandler, conv_id: str) -> list[Json]:
    """Every item of a conversation, oldest first."""
    docs = await handler.ctx.store.find(
        ITEMS, {"conversation": conv_id}, sort="seq", limit=MAX_ITEMS
    )
    return [_item(doc) for doc in docs]


def _key(conv_id: str, item_id: str) -> str:
    """An item's document id: its id is unique within its conversation, not beyond (two
    conversations may each hold a ``msg_1``, as a client's own ids would have it)."""
    return f"{conv_id}:{item_id}"


def _taken(item_id: str, param: str) -> ApiError:
    return ApiError(
        400,
        f"An item with id '{item_id}' is already in this conversation; give each item a new "
        "id, or none.",
        param=param,
        code="invalid_value",
    )


async def check_new_items(
    handler: ClientHandler, conv_id: str, items: list[Json], param: str
) -> None:
    """400 naming ``{param}[i].id`` for the first item whose id the conversation holds
    already: checked before anything is written (or a model called), since the write would
    fail on it. One indexed read, of those ids (ids repeated within ``items`` were refused
    as they were read)."""
    keys = {_key(conv_id, item["id"]): index for index, item in enumerate(items)}
    held = await handler.ctx.store.find(ITEMS, {"_id": {"$in": list(keys)}}, limit=len(keys))
    if held:
        index = min(keys[doc["_id"]] for doc in held)
        raise _taken(items[index]["id"], f"{param}[{index}].id")


async def append_items(
    handler: ClientHandler, conv_id: str, items: list[Json], param: str = "conversation"
) -> None:
    """Add items to a conversation: all of them, or (400 naming ``param``) none."""
    if not items:
        return
    store = handler.ctx.store
    held = await store.count(ITEMS, {"conversation": conv_id})
    if held + len(items) > MAX_ITEMS:
        raise ApiError(
            400,
            f"A conversation holds at most {MAX_ITEMS} items; start a new one.",
            param="conversation",
            code="conversation_full",
        )
    base = time.time_ns()
    docs = []
    for i, item in enumerate(items):
        doc: Json = {
            "_id": _key(conv_id, item["id"]),
            "conversation": conv_id,
            "seq": base + i,
            "created_at": handler.ctx.clock.now(),
            "item": orjson.dumps(item).decode(),  # read whole, by id: kept as text
            **_lookups(item),
        }
        docs.append(doc)
    try:
        await store.insert_many(ITEMS, docs)
    except DuplicateError:
        # Another request added one of these ids since check_new_items read them. A
        # store's batch may have written some of the rest: taken back (by their seq, this
        # batch's own, so the other request's item stays), leaving none of the batch.
        seqs = [doc["seq"] for doc in docs]
        for doc in await store.find(
            ITEMS, {"conversation": conv_id, "seq": {"$in": seqs}}, limit=len(docs)
        ):
            await store.delete(ITEMS, doc["_id"])
        raise ApiError(
            400,
            "Another request added items with the same ids to this conversation at the same "
            "time; nothing was added.",
            param=param,
            code="invalid_value",
        ) from None


async def _check_outputs(handler: ClientHandler, conv_id: str | None, items: list[Json]) -> None:
    """Refuse a function_call_output whose call is neither in the conversation nor earlier
    in ``items`` (400 naming ``items[i]``, as POST /v1/responses names its input): stored,
    it would make every response continuing the conversation fail. Only the calls those
    outputs answer are read."""
    wanted = {item["call_id"] for item in items if item["type"] == "function_call_output"}
    if not wanted:
        return
    calls: set[str] = set()
    if conv_id is not None:
        docs = await handler.ctx.store.find(
            ITEMS, {"conversation": conv_id, "call": {"$in": sorted(wanted)}}, limit=MAX_ITEMS
        )
        calls = {doc["call"] for doc in docs}
    messages: list[Json] = []  # append_item's check (and message) is the one to give
    for index, item in enumerate(items):
        append_item(messages, item, calls, f"items[{index}]")


async def backfill_lookups(store: Store) -> None:
    """Give the function calls and outputs stored before items carried ``call`` and
    ``output_of`` those fields, once per store, at start-up: before any request looks for
    them, so the lookups never need to read a conversation's item texts.

    Store-agnostic, in one place, rather than a step of each store's own schema upgrade:
    the fields are this module's, and MongoDB keeps no schema version. A run cut short, or
    two instances starting together, only do the same idempotent writes again; once done,
    a start-up costs one read."""
    if await store.get(MIGRATIONS, _BACKFILLED) is not None:
        return
    filled = 0
    after = ""
    # Every item lacking both fields, by _id (the primary key) a page at a time; only the
    # calls and outputs among them are written.
    where: Json = {"call": None, "output_of": None}
    while docs := await store.find(ITEMS, {**where, "_id": {"$gt": after}}, limit=_BACKFILL_PAGE):
        for doc in docs:
            fields = _lookups(_item(doc))
            if fields:
                await store.update(ITEMS, doc["_id"], fields)
                filled += 1
        after = docs[-1]["_id"]
    if filled:
        log.info("conversation items: %d function calls and outputs given their call id", filled)
    with contextlib.suppress(DuplicateError):  # another instance finished it too
        await store.insert(MIGRATIONS, {"_id": _BACKFILLED, "filled": filled})


def _items_body(body: Json) -> list[Json]:
    raw = body.get("items")
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_ITEMS_PER_CALL:
        raise ApiError(
            400,
            f"items must be an array of at most {MAX_ITEMS_PER_CALL} items.",
            param="items",
        )
    return input_items(raw, "items")


class ConversationsHandler(ClientHandler):
    async def post(self) -> None:
        body = self.json_body()
        metadata = checked_metadata(body.get("metadata"))
        items = _items_body(body)
        await _check_outputs(self, None, items)
        conv_id = new_id("conv")
        doc: Json = {
            "_id": conv_id,
            "key": self.key.id,
            "created": int(time.time()),
            "created_at": self.ctx.clock.now(),
            "metadata": metadata,
        }
        await self.ctx.store.insert(CONVERSATIONS, doc)
        await append_items(self, conv_id, items, "items")
        self.send_json(conversation_object(doc))


class ConversationHandler(ClientHandler):
    async def get(self, conv_id: str) -> None:
        self.send_json(conversation_object(await owned_conversation(self, conv_id)))

    async def post(self, conv_id: str) -> None:
        await owned_conversation(self, conv_id)
        body = self.json_body()
        if "metadata" not in body:
            raise ApiError(400, "metadata is required.", param="metadata")
        doc = await self.ctx.store.update(
            CONVERSATIONS, conv_id, {"metadata": checked_metadata(body["metadata"])}
        )
        if doc is None:
            raise _not_found(conv_id)
        self.send_json(conversation_object(doc))

    async def delete(self, conv_id: str) -> None:
        await owned_conversation(self, conv_id)
        await self.ctx.store.delete(CONVERSATIONS, conv_id)
        # Its items go too, a page at a time; an item left by a failure here is
        # unreachable, since every read goes through the conversation. By seq: the index.
        while docs := await self.ctx.store.find(
            ITEMS, {"conversation": conv_id}, sort="seq", limit=500
        ):
            for doc in docs:
                await self.ctx.store.delete(ITEMS, doc["_id"])
        self.send_json({"id": conv_id, "object": "conversation.deleted", "deleted": True})


class ConversationItemsHandler(ClientHandler):
    async def get(self, conv_id: str) -> None:
        await owned_conversation(self, conv_id)
        limit = self.int_arg("limit", 20, 1, 100)
        order = self.get_query_argument("order", "desc")
        if order not in ("asc", "desc"):
            raise ApiError(400, "order must be 'asc' or 'desc'.", param="order")
        where: Json = {"conversation": conv_id}
        after = self.get_query_argument("after", None)
        if after is not None:
            cursor = await self.ctx.store.get(ITEMS, _key(conv_id, after))
            if cursor is None:
                raise ApiError(400, f"No item with id '{after}'.", param="after")
            where["seq"] = {"$lt" if order == "desc" else "$gt": cursor["seq"]}
        docs = await self.ctx.store.find(
            ITEMS, where, sort="seq", descending=order == "desc", limit=limit + 1
        )
        page = [_item(doc) for doc in docs[:limit]]
        self.send_json(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(docs) > limit,
            }
        )

    async def post(self, conv_id: str) -> None:
        await owned_conversation(self, conv_id)
        items = _items_body(self.json_body())
        if not items:
            raise ApiError(400, "items must not be empty.", param="items")
        await _check_outputs(self, conv_id, items)
        await check_new_items(self, conv_id, items, "items")
        await append_items(self, conv_id, items, "items")
        self.send_json(
            {
                "object": "list",
                "data": items,
                "first_id": items[0]["id"],
                "last_id": items[-1]["id"],
                "has_more": False,
            }
        )


class ConversationItemHandler(ClientHandler):
    async def _item(self, conv_id: str, item_id: str) -> Json:
        await owned_conversation(self, conv_id)
        doc = await self.ctx.store.get(ITEMS, _key(conv_id, item_id))
        if doc is None:
            raise ApiError(
                404, f"Item with id '{item_id}' not found.", param="item_id", code="not_found"
            )
        return doc

    async def get(self, conv_id: str, item_id: str) -> None:
        self.send_json(_item(await self._item(conv_id, item_id)))

    async def delete(self, conv_id: str, item_id: str) -> None:
        doc = await self._item(conv_id, item_id)
        if doc.get("call") is not None:
            # Without its call, an output left in the conversation would make every
            # response continuing it fail (what _check_outputs refuses to store).
            output = await self.ctx.store.find_one(
                ITEMS, {"conversation": conv_id, "output_of": doc["call"]}
            )
            if output is not None:
                raise ApiError(
                    400,
                    f"Item '{item_id}' is a function call whose output "
                    f"('{_item(output)['id']}') is still in the conversation; delete the "
                    "output first.",
                    param="item_id",
                )
        await self.ctx.store.delete(ITEMS, doc["_id"])
        self.send_json(conversation_object(await owned_conversation(self, conv_id)))
