"""Stored responses and what a follow-up continues: the response documents (their parts
kept as JSON text), read only by the key that made them; a run left unfinished by a
gateway that stopped, recorded failed; and the history a ``previous_response_id`` or a
``conversation`` brings to a turn, from the store or from a WebSocket's own last
responses (``Kept``)."""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from conduit_tornado.admission.limits import INSTANCE_TTL, INSTANCES
from conduit_tornado.core.errors import ApiError, quoted, wrong_prefix
from conduit_tornado.formats.responses import messages_of
from conduit_tornado.formats.responses_output import replayed
from conduit_tornado.routing.providers.base import Json
from conduit_tornado.store import Doc, Store, StoreUnavailable

from .base import ClientHandler
from .conversations import conversation_id, conversation_items, owned_conversation

RESPONSES = "responses"
UNFINISHED = ("queued", "in_progress")


def packed(value: Any) -> str:
    """A stored response's parts are kept as JSON text: read only whole and by id, they
    cost the store one field instead of a tree of sub-documents to encode (or, in the
    in-process store, to copy and have the garbage collector walk)."""
    return orjson.dumps(value).decode()


def unpacked(doc: Json) -> Json:
    """A stored response document with its parts decoded."""
    return {
        **doc,
        **{
            name: orjson.loads(doc[name])
            for name in ("response", "items", "messages", "history")
            if isinstance(doc.get(name), str)
        },
    }


async def end_unfinished(
    store: Store, running: Json, message: str, code: str = "server_error"
) -> None:
    """Record that a run ended without an answer, unless a cancel got there first."""
    failed = {**running, "status": "failed", "error": {"code": code, "message": message}}
    with contextlib.suppress(StoreUnavailable):  # the lazy check in Owned catches it later
        await store.update(
            RESPONSES,
            running["id"],
            {"status": "failed", "response": packed(failed)},
            where={"status": {"$in": list(UNFINISHED)}},
        )


def not_found(response_id: str, param: str | None = None) -> ApiError:
    return ApiError(
        404,
        f"Response with id {quoted(response_id)} not found.",
        param=param,
        code="response_not_found" if param is None else "previous_response_not_found",
    )


@dataclass
class Prior:
    """What a request continues: the history as chat messages, and where the previous
    response was made when a provider's own Responses API made it."""

    messages: list[Json] = field(default_factory=list)
    upstream: Json | None = None


class Kept:
    """What one WebSocket (api/responses_socket.py) keeps of the responses it made, so
    that a follow-up on the same socket can continue one that was never stored (store
    false: the agent loops of Zero Data Retention), as OpenAI's connection-local cache
    does: each lane's (``stream_id``) last response, what prior() reads of a stored one
    (conversation_after's parts, the upstream) and the key that made it. A lane keeps only
    its own last, so a busy lane never pushes out an idle one's; at most ``lanes`` lanes
    are kept (the socket's MAX_LANES), the one that kept longest ago let go first. And the
    ids of the turns running on the socket: a follow-up naming one is told to wait, not
    that it is missing. Nothing outlives the socket: this is its memory, not the store's."""

    def __init__(self, lanes: int) -> None:
        self._lanes = lanes
        self._last: OrderedDict[str | None, tuple[str, Json]] = OrderedDict()
        self._running: dict[str, str] = {}  # response id: the key running it

    def keep(self, lane: str | None, response_id: str, doc: Json) -> None:
        self._last[lane] = (response_id, doc)
        self._last.move_to_end(lane)
        if len(self._last) > self._lanes:
            self._last.popitem(last=False)

    def get(self, response_id: str, key_id: str) -> Json | None:
        """The kept response, if the calling key made it."""
        for kept_id, doc in self._last.values():  # one per lane: a handful
            if kept_id == response_id:
                return doc if doc["key"] == key_id else None
        return None

    @contextlib.contextmanager
    def running(self, response_id: str, key_id: str) -> Iterator[None]:
        """While a turn runs: its id, for is_running."""
        self._running[response_id] = key_id
        try:
            yield
        finally:
            self._running.pop(response_id, None)  # gone already if the socket closed

    def is_running(self, response_id: str, key_id: str) -> bool:
        return self._running.get(response_id) == key_id

    def clear(self) -> None:
        self._last.clear()
        self._running.clear()


async def owned_response(handler: ClientHandler, response_id: str, param: str | None = None) -> Doc:
    """A stored response of the calling key, as stored; another key's is reported missing."""
    doc = await handler.ctx.store.get(RESPONSES, response_id)
    if doc is None or doc.get("key") != handler.key.id:
        raise not_found(response_id, param)
    return doc


async def current(handler: ClientHandler, doc: Json) -> Json:
    """A stored response (parts decoded) as it stands: one left unfinished by a gateway
    that stopped without recording the end (killed, or the store was down then) is
    recorded failed, rather than left in progress for ever."""
    if doc.get("status") in UNFINISHED and not await _running(handler, doc):
        await end_unfinished(
            handler.ctx.store,
            doc["response"],
            "The gateway running this response stopped before it finished; send the request again.",
        )
        doc = unpacked(await handler.ctx.store.get(RESPONSES, doc["_id"]) or doc)
    return doc


async def _running(handler: ClientHandler, doc: Json) -> bool:
    runner = doc.get("runner")
    if runner == handler.ctx.limiter.instance:
        return doc["_id"] in handler.ctx.in_flight.runs
    seen = await handler.ctx.store.get(INSTANCES, str(runner))
    return seen is not None and seen["seen"] >= handler.ctx.clock.now() - INSTANCE_TTL


async def prior(handler: ClientHandler, body: Json, kept: Kept | None = None) -> Prior:
    """The history a request continues: its conversation's items, or the conversation
    that led to its previous_response_id (``kept``: a WebSocket's own responses, looked
    at before the store)."""
    if body.get("conversation") is not None:
        conv_id = conversation_id(body["conversation"])
        await owned_conversation(handler, conv_id, "conversation")
        return Prior(messages_of(await conversation_items(handler, conv_id)))
    previous = body.get("previous_response_id")
    if previous is None:
        return Prior()
    if not isinstance(previous, str):
        raise ApiError(400, "previous_response_id must be a string.", param="previous_response_id")
    if not previous.startswith("resp_"):
        raise wrong_prefix("previous_response_id", previous, "resp")
    doc = kept.get(previous, handler.key.id) if kept is not None else None
    if doc is None:
        if kept is not None and kept.is_running(previous, handler.key.id):
            # Another lane's turn: neither kept nor stored before it ends.
            raise in_progress(previous, "its lane's response.completed")
        stored = unpacked(await owned_response(handler, previous, "previous_response_id"))
        doc = await current(handler, stored)
        if doc.get("status") in UNFINISHED:
            raise in_progress(previous, "GET /v1/responses/{id}")
    return Prior(conversation_after(doc), doc.get("upstream"))


def in_progress(previous: str, until: str) -> ApiError:
    # Its output is not there yet: a follow-up now would continue without it.
    return ApiError(
        400,
        f"Previous response with id '{previous}' is still in progress; wait until it has "
        f"finished ({until}) before continuing from it.",
        param="previous_response_id",
        code="previous_response_in_progress",
    )


def conversation_after(doc: Json) -> list[Json]:
    """The conversation after a stored response, as chat messages: kept whole (a
    background run's, a natively relayed one's), or rebuilt from the history it continued,
    its input items and its output (most responses, which are never continued, then
    store no copy of their input as chat)."""
    if "messages" in doc:
        return list(doc["messages"] or [])
    return replayed(doc.get("history") or [], doc.get("items") or [], doc["response"]["output"])


class Owned(ClientHandler):
    """Reads stored responses of the calling key; another key's are reported missing."""

    async def owned(self, response_id: str) -> Json:
        """The response with its parts decoded."""
        return await current(self, unpacked(await owned_response(self, response_id)))
