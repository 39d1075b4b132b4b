"""Background responses that stream: ``POST /v1/responses`` with ``background`` and
``stream`` both true, and ``GET /v1/responses/{id}?stream=true&starting_after=N``.

The run is an in-process ``POST /v1/responses`` served by ``BackgroundStreamRun`` (the
ResponsesHandler that serves HTTP, with its storage made a running document), so it has
the HTTP route's admission, routing to every provider, usage, cost and request log. Its
events go to an event log in the store (``response_events``, one document per event,
kept as long as stored responses) rather than to a client: the client that made it, and
anyone with its key later, *follow* that log from a sequence number, so the run goes on
when a client leaves and a reader may resume where it stopped. Followers in the process of
the run are woken as events are written; others read the store every POLL seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from tornado.httputil import (
    HTTPConnection,
    HTTPHeaders,
    HTTPServerRequest,
    RequestStartLine,
    ResponseStartLine,
)
from tornado.iostream import StreamClosedError

from conduit_tornado.core.errors import ApiError
from conduit_tornado.formats.responses import new_id
from conduit_tornado.formats.responses_events import EventStream
from conduit_tornado.formats.responses_output import usage_object
from conduit_tornado.formats.sse import named_events
from conduit_tornado.routing.providers.base import Json, Usage
from conduit_tornado.server.http import RequestContext
from conduit_tornado.server.tornado_private import body_complete, start_streaming_handler
from conduit_tornado.store import StoreUnavailable

from .base import ClientHandler
from .responses import _FINAL, ResponsesHandler, Turn
from .responses_stored import RESPONSES, UNFINISHED, current, end_unfinished, packed, unpacked

log = logging.getLogger("conduit.responses")
EVENTS = "response_events"
POLL = 0.1  # seconds between store reads when the run is in another process
LIVENESS = 1.0  # seconds between a follower's checks that such a run still runs
PAGE = 500  # events read from the store at a time
#: Seconds a stopped run is given to write its last events and its Response.
ENDING = 5.0

#: In-process runs' event logs, by response id: followers here wait on a log's wake-up
#: instead of polling, and a cancel here marks it.
_LIVE: dict[str, EventLog] = {}


def _event_id(response_id: str, seq: int) -> str:
    # Zero-padded so the ids of one response sort by sequence number.
    return f"{response_id}.{max(seq, -1) + 1:010d}"


class BackgroundStreamRun(ResponsesHandler):
    """Serves the in-process POST of a streamed background response: the stored document
    is written when the run starts (``in_progress``, so GET and cancel see it) and
    completed at its end, instead of written once at the end."""

    preset_id = ""
    #: Its connection, the event log, never leaves: only a cancel (or the gateway
    #: stopping) stops it, and a background run without stream logs those so.
    GONE = "cancelled"

    def initialize(self, response_id: str = "") -> None:
        super().initialize()
        self.preset_id = response_id

    async def stream_in_background(self, body: Any) -> bool:
        return False  # this is the run itself

    def new_response_id(self) -> str:
        return self.preset_id

    async def _start(self, turn: Turn) -> None:
        running = self._running_doc(turn, turn.response("in_progress"))
        # Its events are in response_events.
        await self.ctx.store.insert(RESPONSES, {**running, "events": True})
        try:
            await self._stream(turn)
        except ApiError:
            # Nothing was streamed (no provider answered): nothing stays stored.
            with contextlib.suppress(StoreUnavailable):
                await self.ctx.store.delete(RESPONSES, turn.response_id)
            raise

    async def _cut_short(
        self, turn: Turn, events: EventStream, seen: Json, upstream: Json | None, usage: Usage
    ) -> None:
        """Stopped before its Response. Cancelled: the stream ends with the Response,
        cancelled, holding what was made and its (billed) usage, which is what is stored.
        Failed upstream: the failure's event is out, the failed Response is stored. The
        gateway stopping: _run records that."""
        event_log = self.request.connection
        assert isinstance(event_log, EventLog)
        if event_log.cancelled:
            if not self._streaming:
                # Cancelled before the provider's first event: the stream is its start
                # and its end, the translated stream's whatever the provider.
                self.sse_headers()
                last = events.start_frames() + named_events(events.cancel(usage))
                final = events.final
            elif upstream is None:
                last = named_events(events.cancel(usage))
                final = events.final
            else:
                # Relayed: the finished items (_as_background noted them); one being
                # streamed is left out, its text being the provider's events only.
                final = {
                    **(seen.get("latest") or turn.response("in_progress")),
                    "status": "cancelled",
                    "output": seen.get("items", []),
                    "usage": usage_object(usage),
                }
                end = {"type": "response.completed", "response": final}
                last = named_events([{**end, "sequence_number": seen.get("seq", 0) + 1}])
            await self._end_stream(turn, final, upstream, None, last)
        elif events.final is not None and not self._client_gone:
            await self._save(turn, events.final, upstream)

    def end_events(self) -> None:
        # The connection is the event log, open whoever left: finishing it tells _run
        # that the run's last events and its Response are stored.
        self.finish()

    async def _end_stream(
        self,
        turn: Turn,
        final: Json | None,
        upstream: Json | None,
        encoded: bytes | None,
        last: bytes,
    ) -> None:
        # The other order: followers read the event log until the stored Response has
        # ended, so its last events are stored first (or a follower could see it ended
        # before they were, and stop without them).
        if last:
            await self._send_frames(last)
        if final is not None:
            await self._save(turn, final, upstream, encoded)

    async def _save(
        self, turn: Turn, response: Json, upstream: Json | None, encoded: bytes | None = None
    ) -> None:
        await self._record(turn, response)  # neither failed nor cancelled ones
        await self.ctx.store.update(
            RESPONSES,
            turn.response_id,
            {
                "status": response["status"],
                "response": encoded.decode() if encoded is not None else packed(response),
                "messages": packed(turn.messages(response["output"])),
                "upstream": upstream,
            },
            where={"status": {"$in": list(UNFINISHED)}},  # a cancel got there first
        )


class EventLog(HTTPConnection):
    """The connection the run is answered on: each SSE event it writes is stored (the
    write completes when the store has it) and wakes this process's followers."""

    def __init__(self, handler: ClientHandler, response_id: str) -> None:
        self.ctx = handler.ctx
        self.response_id = response_id
        self.context = RequestContext(
            handler.request.remote_ip or "", handler.request.protocol or "http"
        )
        self.status = 0
        self.sse = False
        self.error_body = bytearray()
        self._pending = b""
        self._close_callback: Callable[[], None] | None = None
        #: Stopped by a client's cancel (not by the gateway stopping).
        self.cancelled = False
        loop = asyncio.get_running_loop()
        self.head: asyncio.Future[None] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()
        self.wake = asyncio.Event()
        _LIVE[response_id] = self

    def set_close_callback(self, callback: Callable[[], None] | None) -> None:
        self._close_callback = callback

    def write_headers(
        self,
        start_line: RequestStartLine | ResponseStartLine,
        headers: HTTPHeaders,
        chunk: bytes | None = None,
    ) -> asyncio.Future[None]:
        assert isinstance(start_line, ResponseStartLine)
        self.status = start_line.code
        self.sse = headers.get("Content-Type", "").startswith("text/event-stream")
        if not self.head.done():
            self.head.set_result(None)
        return self.write(chunk or b"")

    def write(self, chunk: bytes) -> asyncio.Future[None]:
        if not self.sse:
            self.error_body += chunk
            return _done()
        *frames, self._pending = (self._pending + chunk).split(b"\n\n")
        docs = []
        now = self.ctx.clock.now()
        for frame in frames:
            data = [line[5:].lstrip() for line in frame.split(b"\n") if line.startswith(b"data:")]
            if not data:
                continue  # a keepalive comment
            event = orjson.loads(b"\n".join(data))
            seq = event.get("sequence_number")
            if not isinstance(seq, int):
                continue
            docs.append(
                {
                    "_id": _event_id(self.response_id, seq),
                    "response": self.response_id,
                    "seq": seq,
                    "created_at": now,
                    "event": orjson.dumps(event).decode(),
                }
            )
        if not docs:
            return _done()
        return asyncio.ensure_future(self._store(docs))

    async def _store(self, docs: list[dict[str, Any]]) -> None:
        await self.ctx.store.insert_many(EVENTS, docs)
        self.wake.set()
        self.wake.clear()

    def finish(self) -> None:
        if not self.head.done():
            self.head.set_result(None)
        if not self.finished.done():
            self.finished.set_result(None)

    def stop(self) -> None:
        """The run is cancelled: the handler stops reading upstream and bills what was
        made, as for a client that left (ProxyHandler.on_connection_close)."""
        callback, self._close_callback = self._close_callback, None
        if callback is not None:
            callback()


def _done() -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


async def _run(handler: ClientHandler, events: EventLog, body: bytes) -> None:
    """Serve the run's POST in process, until it ends or is cancelled."""
    request = HTTPServerRequest(
        connection=events,
        start_line=RequestStartLine("POST", handler.request.path, "HTTP/1.1"),
        headers=_headers(handler, len(body)),
    )
    run = BackgroundStreamRun(handler.application, request, response_id=events.response_id)
    why = "The gateway failed while running this response."
    try:
        await start_streaming_handler(run, request, [])
        run.data_received(body)
        body_complete(request)
        # Shielded: a cancel must leave it to be awaited below, while the run ends.
        await asyncio.shield(events.finished)
    except asyncio.CancelledError:
        # A cancel, or the gateway stopping: the run stops reading upstream, bills what
        # was made and ends its stream (_cut_short).
        why = "The gateway stopped before this response finished."
        events.stop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ENDING):
                await events.finished
        raise
    finally:
        # However it ended, its Response is not left in progress (followers would wait
        # for it for ever): if the run did not record its end, say why.
        with contextlib.suppress(StoreUnavailable):  # current() records it on a read
            doc = await handler.ctx.store.get(RESPONSES, events.response_id)
            if doc is not None and doc.get("status") in UNFINISHED:
                await end_unfinished(handler.ctx.store, orjson.loads(doc["response"]), why)
        events.finish()  # whoever waits for its head or end stops waiting
        events.wake.set()  # followers look once more, and see the end
        _LIVE.pop(events.response_id, None)


def _headers(handler: ClientHandler, length: int) -> HTTPHeaders:
    headers = HTTPHeaders(
        {
            "Host": handler.request.host,
            "Content-Type": "application/json",
            "Content-Length": str(length),
        }
    )
    for name in ("Authorization", "api-key", "x-api-key", "Via"):
        for value in handler.request.headers.get_list(name):
            headers.add(name, value)
    return headers


async def background_stream(handler: ClientHandler, body: dict[str, Any]) -> None:
    """POST /v1/responses with background and stream: start the run, then follow it."""
    response_id = new_id("resp")
    events = EventLog(handler, response_id)
    handler.ctx.in_flight.start_run(response_id, _run(handler, events, orjson.dumps(body)))
    await events.head
    if events.status != 200 or not events.sse:
        # Refused before anything streamed (a 4xx naming the param, a 429, no provider):
        # the run's own answer, as the client would have had it over HTTP.
        await events.finished
        handler.set_status(events.status or 500)
        handler.set_header("Content-Type", "application/json")
        handler.finish(bytes(events.error_body))
        return
    await follow(handler, response_id, -1)


async def cancel_streamed(response_id: str, run: asyncio.Task[None]) -> bool:
    """Cancel a streamed run of this process and wait for it to end: its stream ends
    with the Response, cancelled, stored with what it made. False: not one of those."""
    event_log = _LIVE.get(response_id)
    if event_log is None:
        return False
    if not event_log.cancelled:  # another cancel's is ending it: cancelling again would
        event_log.cancelled = True  # cut that ending short
        run.cancel()
    await asyncio.wait([run])
    return True


async def follow(handler: ClientHandler, response_id: str, after: int) -> None:
    """Write a response's stored events after sequence number ``after`` as SSE, and the
    ones still to come, until the response has ended (or its runner has, without
    recording the end: current() records it), then with its end if the log has none."""
    ctx = handler.ctx
    handler.set_header("Content-Type", "text/event-stream; charset=utf-8")
    handler.set_header("Cache-Control", "no-cache")
    handler.set_header("X-Accel-Buffering", "no")
    checked = time.monotonic()
    start = after
    kind: str | None = None  # the type of the last event written here
    try:
        while True:
            live = _LIVE.get(response_id)
            waiter = asyncio.ensure_future(live.wake.wait()) if live is not None else None
            page = await ctx.store.find(
                EVENTS,
                {"response": response_id, "_id": {"$gt": _event_id(response_id, after)}},
                sort="_id",
                limit=PAGE,
            )
            if page:
                if waiter is not None:
                    waiter.cancel()
                for doc in page:
                    event = doc["event"]
                    kind = str(orjson.loads(event)["type"])
                    handler.write(f"event: {kind}\ndata: {event}\n\n".encode())
                    after = doc["seq"]
                await handler.flush()
                continue
            stored = await ctx.store.get(RESPONSES, response_id)
            if (
                live is None  # an in-process run is live until its end is recorded
                and stored is not None
                and stored.get("status") in UNFINISHED
                and time.monotonic() - checked >= LIVENESS
            ):
                checked = time.monotonic()
                stored = await current(handler, unpacked(stored))
            if stored is None or stored.get("status") not in UNFINISHED:
                if waiter is not None:
                    waiter.cancel()
                # One more read: events written between the page and the status.
                if await ctx.store.count(
                    EVENTS,
                    {"response": response_id, "_id": {"$gt": _event_id(response_id, after)}},
                ):
                    continue
                if stored is not None:
                    handler.write(await _untold_end(handler, stored, start, after, kind))
                break
            if waiter is None:
                await asyncio.sleep(POLL)
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL * 10):
                        await waiter
                waiter.cancel()
        handler.finish()
    except StreamClosedError:
        return  # the client left; the run goes on


async def _untold_end(
    handler: ClientHandler, stored: Json, start: int, last: int, kind: str | None
) -> bytes:
    """The event ending a followed response whose log has no end (its gateway died
    mid-run and current() recorded it failed, or the run ended without writing one): the
    stored Response under the event its status ends a stream with, numbered after the
    log's last event, as the run would have sent it; without it a client's stream just
    stops, with neither Response nor error. Not stored: a reader writes nothing, and the
    stored Response, ended, makes it the same on every replay. ``last``, ``kind``: the
    number and type of the last event this follower wrote (``kind`` None: none), and
    ``start`` where it started (b"" if the end comes before that)."""
    if kind is None:  # none written here: the log's last event, if any, is before start
        tail = await handler.ctx.store.find(
            EVENTS, {"response": stored["_id"]}, sort="_id", descending=True, limit=1
        )
        if tail:
            last, kind = tail[0]["seq"], orjson.loads(tail[0]["event"])["type"]
        else:
            last = -1
    if kind in _FINAL or last + 1 <= start:
        return b""
    response = unpacked(stored)["response"]
    ending = _ENDINGS.get(response.get("status"), "response.completed")  # cancelled too
    return named_events([{"type": ending, "sequence_number": last + 1, "response": response}])


#: The event a stream ends with, by its Response's status (a cancelled one's is
#: response.completed, as EventStream.cancel says).
_ENDINGS = {"failed": "response.failed", "incomplete": "response.incomplete"}


async def follow_stored(handler: ClientHandler, doc: dict[str, Any]) -> None:
    """GET /v1/responses/{id}?stream=true[&starting_after=N] of a stored response."""
    if not doc.get("events"):
        raise ApiError(
            400,
            "Only a response created with background and stream true can be streamed "
            "again; read this one with GET /v1/responses/{id}.",
            param="stream",
            code="invalid_request",
        )
    after = handler.int_arg("starting_after", -1, -1, 2**31 - 1)
    await follow(handler, doc["_id"], after)
