"""The Responses API's WebSocket mode: ``client.responses.connect()`` opens a WebSocket at
/v1/responses and sends ``response.create`` events; each is answered with the events the
SSE stream of ``POST /v1/responses`` would carry, one JSON text message per event.

Each ``response.create`` runs as an in-process ``POST /v1/responses`` with ``stream:
true``, through the very ResponsesHandler that serves HTTP (api/responses.py): the same
admission, routing to every provider type (native or translated), storage, request log,
usage and cost. Only its transport differs: the handler writes to a ``Turn`` connection
that turns its server-sent events into WebSocket messages, and its errors into ``error``
events carrying the HTTP status.

Requests with the same ``stream_id`` (a lane) are answered in order; lanes run side by
side, at most MAX_LANES per socket. ``background`` true is refused (as OpenAI does on
this transport), and so is ``response.steer`` (not supported by this gateway yet).

As OpenAI's connection-local cache does, the socket keeps each lane's last response in
memory (responses.Kept), so a follow-up naming one continues it even when it was not
stored (``store`` false); they go with the socket. A follow-up naming a turn still
running on the socket is told it is in progress. ``generate`` false is a warm-up: a
response with no output and no model call, to continue from (ResponsesHandler._prepare),
admitted by the key's request limits and budgets like any request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import orjson
import tornado.web
import tornado.websocket
from tornado.httputil import (
    HTTPConnection,
    HTTPHeaders,
    HTTPServerRequest,
    RequestStartLine,
    ResponseStartLine,
)

from conduit_tornado.admission.keys import VirtualKey
from conduit_tornado.context import Context
from conduit_tornado.core.errors import ApiError
from conduit_tornado.server.http import RequestContext
from conduit_tornado.server.tornado_private import body_complete, start_streaming_handler

from .base import TOO_DEEP, ApiResponses, bearer_token, too_deep, too_deep_field
from .responses import ResponsesHandler
from .responses_stored import Kept

log = logging.getLogger("conduit.responses")
MAX_LANES = 8  # lanes answered side by side on one socket
MAX_QUEUED = 32  # response.create events waiting on one socket, all lanes together


def _done() -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


#: Fields of a response.create event that are not its POST body: the event's own, and
#: ``generate`` (WebSocket-only: the handler is told it on its own, see _turn).
_NOT_THE_BODY = frozenset({"type", "stream_id", "generate"})


class Turn(HTTPConnection):
    """The connection one in-process POST /v1/responses is answered on: its head and
    body become WebSocket messages (each SSE event one message; an error answer one
    ``error`` event)."""

    def __init__(self, socket: ResponsesSocketHandler, stream_id: str | None) -> None:
        self.socket = socket
        self.stream_id = stream_id
        self.context = RequestContext(
            socket.request.remote_ip or "", socket.request.protocol or "http"
        )
        self.status = 0
        self.sse = False
        self._pending = bytearray()  # an SSE event cut between two writes, or an error body
        self._close_callback: Callable[[], None] | None = None
        self.finished = asyncio.get_running_loop().create_future()

    # -- tornado.httputil.HTTPConnection --------------------------------------------------

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
        return self.write(chunk or b"")

    def write(self, chunk: bytes) -> asyncio.Future[None]:
        if not chunk:
            return _done()
        self._pending += chunk
        if not self.sse:
            return _done()  # an error answer: sent whole at finish()
        *events, rest = bytes(self._pending).split(b"\n\n")
        self._pending = bytearray(rest)
        last: asyncio.Future[None] | None = None
        for event in events:
            data = _sse_data(event)
            if data is not None:
                last = self.socket.send_event(data, self.stream_id)
        return last if last is not None else _done()

    def finish(self) -> None:
        if not self.sse and self.status >= 300:
            self.socket.send_error_answer(self.status, bytes(self._pending), self.stream_id)
        if not self.finished.done():
            self.finished.set_result(None)

    # -- the socket's side ----------------------------------------------------------------

    def client_gone(self) -> None:
        """The socket closed mid-turn: the handler stops reading upstream and bills what
        was made, as for an HTTP client that leaves (ProxyHandler.on_connection_close)."""
        callback, self._close_callback = self._close_callback, None
        if callback is not None:
            callback()
        if not self.finished.done():
            self.finished.set_result(None)


def _sse_data(event: bytes) -> bytes | None:
    """The data of one SSE event (keepalive comments have none)."""
    data = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(data) if data else None


class ResponsesSocketHandler(ApiResponses, tornado.websocket.WebSocketHandler):
    """GET /v1/responses with ``Upgrade: websocket`` (the direct dispatch and
    GatewayApplication.get_handler_delegate send upgrades here; a plain GET reaches
    ResponsesHandler.get, a 426). The key is checked before the upgrade is accepted, so a
    refusal is a plain HTTP error in OpenAI's envelope; each turn authenticates again as
    its POST would (a key disabled meanwhile stops the next turn)."""

    def initialize(self) -> None:
        self.ctx: Context = self.application.settings["conduit"]
        self.key: VirtualKey | None = None
        self._lanes: dict[str | None, asyncio.Queue[tuple[bytes, bool]]] = {}
        self._workers: dict[str | None, asyncio.Task[None]] = {}
        self._turns: set[Turn] = set()
        self._queued = 0
        self._closed = False
        self._kept = Kept(MAX_LANES)  # each lane's last response, for follow-ups

    async def prepare(self) -> None:
        self.refuse_loops()
        if self.request.headers.get("Upgrade", "").lower() != "websocket":
            raise ApiError(
                426,
                "This URL takes WebSocket upgrades (or POST).",
                code="upgrade_required",
                headers={"Upgrade": "websocket"},
            )
        self.key = await self.ctx.keys.authenticate(bearer_token(self))
        if not self.key.allows_ip(self.request.remote_ip or ""):
            raise ApiError(
                403,
                "Requests from this address are not allowed for this key.",
                code="ip_not_allowed",
            )

    # Per handler, not application-wide: inside Jupyter these must not touch kernel sockets.
    @property
    def max_message_size(self) -> int:
        return self.ctx.settings.max_request_bytes

    @property
    def ping_interval(self) -> float:
        return self.ctx.settings.websocket_ping_interval

    def get_compression_options(self) -> dict[str, Any] | None:
        return None

    def open(self, *args: str) -> None:
        self.set_nodelay(True)

    def on_message(self, message: str | bytes) -> None:
        try:
            event = orjson.loads(message)
        except orjson.JSONDecodeError:
            self.send_error_event(400, "The message is not valid JSON.", None)
            return
        if not isinstance(event, dict):
            self.send_error_event(400, "Each message must be a JSON object.", None)
            return
        if too_deep(message, event):
            self.send_error_event(400, TOO_DEEP, None, too_deep_field(event))
            return
        lane = event.get("stream_id")
        if lane is not None and (not isinstance(lane, str) or not 0 < len(lane) <= 256):
            self.send_error_event(
                400, "stream_id must be a string of 1 to 256 characters.", None, "stream_id"
            )
            return
        kind = event.get("type")
        if kind != "response.create":
            self.send_error_event(
                400,
                f"Unsupported event type {kind!r}: this gateway takes response.create.",
                lane,
                "type",
                "unsupported_value" if kind == "response.steer" else "invalid_value",
            )
            return
        # Only true is refused here: a non-boolean goes on to the turn, whose check_params
        # refuses it as POST would (invalid_type, not "not supported").
        if event.get("background") is True:
            self.send_error_event(
                400,
                "background is not supported over WebSocket; use POST /v1/responses.",
                lane,
                "background",
            )
            return
        generate = event.get("generate", True)
        if generate is not True and generate is not False:
            self.send_error_event(400, "generate must be a boolean.", lane, "generate")
            return
        if self._queued >= MAX_QUEUED or (
            lane not in self._lanes and len(self._lanes) >= MAX_LANES
        ):
            self.send_error_event(
                429,
                f"Too many requests waiting on this socket (at most {MAX_QUEUED} queued in "
                f"{MAX_LANES} lanes).",
                lane,
                code="too_many_requests",
            )
            return
        body = {k: v for k, v in event.items() if k not in _NOT_THE_BODY}
        body["stream"] = True
        queue = self._lanes.get(lane)
        if queue is None:
            queue = self._lanes[lane] = asyncio.Queue()
            self._workers[lane] = asyncio.ensure_future(self._lane(lane, queue))
        self._queued += 1
        queue.put_nowait((orjson.dumps(body), generate))

    async def _lane(self, lane: str | None, queue: asyncio.Queue[tuple[bytes, bool]]) -> None:
        while not self._closed:
            body, generate = await queue.get()
            self._queued -= 1
            try:
                await self._turn(body, lane, generate)
            except Exception:  # a bug in the relay: this turn is lost, the socket goes on
                log.exception("responses websocket turn failed")
                self.send_error_event(500, "The gateway failed while answering.", lane)
            if queue.empty():  # an idle lane is let go (a new one starts when needed)
                self._lanes.pop(lane, None)
                self._workers.pop(lane, None)
                return

    async def _turn(self, body: bytes, lane: str | None, generate: bool) -> None:
        """One POST /v1/responses, served in process by ResponsesHandler."""
        turn = Turn(self, lane)
        headers = HTTPHeaders(
            {
                "Host": self.request.host,
                "Content-Type": "application/json",
                "Content-Length": str(len(body)),
            }
        )
        for name in ("Authorization", "api-key", "Via"):
            for value in self.request.headers.get_list(name):
                headers.add(name, value)
        path = self.request.path  # /v1/responses, under the application's prefix
        request = HTTPServerRequest(
            connection=turn,
            start_line=RequestStartLine("POST", path, "HTTP/1.1"),
            headers=headers,
        )
        handler = ResponsesHandler(self.application, request)
        handler.kept = self._kept
        handler.lane = lane
        handler.generate = generate
        self._turns.add(turn)
        try:
            await start_streaming_handler(handler, request, [])
            handler.data_received(body)  # only buffered if prepare() already answered
            body_complete(request)
            await turn.finished
        finally:
            self._turns.discard(turn)

    # -- sending ----------------------------------------------------------------------------

    def send_event(self, data: bytes, lane: str | None) -> asyncio.Future[None] | None:
        if self._closed:
            return None
        if lane is not None:
            event = orjson.loads(data)
            event["stream_id"] = lane
            data = orjson.dumps(event)
        try:
            return self.write_message(data.decode())
        except tornado.websocket.WebSocketClosedError:
            return None

    def send_error_answer(self, status: int, body: bytes, lane: str | None) -> None:
        """An HTTP error answer of a turn, as the SDK's ``error`` event."""
        try:
            error = orjson.loads(body)["error"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            error = {"type": "server_error", "message": "The request failed.", "code": None}
        self._send({"type": "error", "status": status, "error": error}, lane)

    def send_error_event(
        self,
        status: int,
        message: str,
        lane: str | None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        error = ApiError(status, message, param=param, code=code).envelope()["error"]
        self._send({"type": "error", "status": status, "error": error}, lane)

    def _send(self, event: dict[str, Any], lane: str | None) -> None:
        if lane is not None:
            event["stream_id"] = lane
        if not self._closed:
            with contextlib.suppress(tornado.websocket.WebSocketClosedError):
                self.write_message(orjson.dumps(event).decode())

    def on_close(self) -> None:
        self._closed = True
        for turn in list(self._turns):
            turn.client_gone()
        for worker in self._workers.values():
            worker.cancel()
        self._lanes.clear()
        self._workers.clear()
        self._kept.clear()  # what the socket kept goes with it
