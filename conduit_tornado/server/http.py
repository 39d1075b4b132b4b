"""A lean HTTP/1.1 server for Tornado applications: asyncio protocols and httptools' C
parser in place of Tornado's IOStream and pure-Python HTTP1Connection.

Why: for a trivial handler most of a request's CPU under Tornado's own server is its HTTP
layer; bench/floor.py measures the floor of each server (its docstring records runs).
The handlers stay Tornado RequestHandlers: each request gets an ``Exchange``, our
implementation of Tornado's ``HTTPConnection`` interface, and the application's delegate
is driven exactly as Tornado's server drives it (headers, then body chunks once
``prepare`` is done, then finish), so routing, streaming bodies, flushes with
backpressure, close callbacks and WebSocket upgrades (``detach``) all keep working. The
Jupyter extension does not use this module: inside Jupyter, Jupyter's own Tornado server
serves the same handlers.

Every connection is held to ServerLimits (server/limits.py), in the manner of uvicorn's
httptools protocol: a deadline for a request's head, for silence while its body is
awaited, for a client that does not take our bytes, and for idling between requests (one
sweep checks them all); a cap on connections (503 beyond it) with accept errors reported
at most once a second; reading paused while a request waits behind one being answered
(bounded pipelining), and the next answer held back while a client does not read.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import http
import logging
import os
import secrets
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

import httptools
import orjson
import tornado.iostream
from tornado.httputil import (
    HTTPConnection,
    HTTPHeaders,
    HTTPInputError,
    HTTPServerConnectionDelegate,
    RequestStartLine,
    ResponseStartLine,
)

from conduit_tornado.core.errors import default_type, error_envelope
from conduit_tornado.core.settings import Settings

from .forwarded import TrustedProxies
from .limits import ServerLimits
from .tls import relay_to_stream, server_context
from .write_flow import WriteFlow

log = logging.getLogger("conduit.http")

MAX_HEADER_BYTES = 64 * 1024
READ_HIGH_WATER = 1 << 20  # stop reading while this much request body waits for a handler
CORK_LIMIT = 64 * 1024  # asyncio's write high-water mark: write at once past it
SWEEP_SECONDS = 5.0  # the longest a deadline may be overrun
ACCEPT_BATCH = 64  # connections taken per readiness of a listening socket
ACCEPT_RETRY_SECONDS = 0.25  # after an accept error such as EMFILE (reported once a second)
OVERLOAD_LINGER = 1.0  # seconds a refused connection is read (and dropped) before closing
MAX_OVERLOADED = 64  # refused connections lingering at once; beyond, closed unanswered
_CLOSED = tornado.iostream.StreamClosedError


def refusal(status: int, message: str, code: str, headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """An answer the server gives by itself (the request never reached a handler), in
    OpenAI's error envelope like every other answer; the connection closes after it."""
    body = orjson.dumps(error_envelope(message, default_type(status), code))
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"X-Request-Id: req_{secrets.token_hex(12)}\r\n{extra}Connection: close\r\n\r\n"
    ).encode() + body


def overload_answer() -> bytes:
    return refusal(
        503,
        "The server is at its connection limit; try again shortly.",
        "too_many_connections",
        [("Retry-After", "1")],
    )


class _Throttled:
    """A log line at most once per ``every`` seconds, counting what it held back (a flood
    of identical errors must not become a flood of log)."""

    def __init__(self, every: float = 1.0) -> None:
        self.every = every
        self._last = -every
        self._held = 0

    def __call__(self, level: int, message: str, *args: object) -> None:
        self._held += 1
        now = time.monotonic()
        if now - self._last >= self.every:
            log.log(level, message + " (%d time(s) since the last report)", *args, self._held)
            self._last = now
            self._held = 0


class RequestContext:
    """What HTTPServerRequest reads from ``connection.context``."""

    __slots__ = ("protocol", "remote_ip")

    def __init__(self, remote_ip: str, protocol: str) -> None:
        self.remote_ip = remote_ip
        self.protocol = protocol

    def __str__(self) -> str:
        return self.remote_ip


def _failed() -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_exception(_CLOSED())
    future.exception()  # nobody may look; that is fine
    return future


class Exchange(HTTPConnection):
    """One request and its response on a connection (Tornado's HTTPConnection)."""

    def __init__(
        self,
        conn: _ServerProtocol,
        context: RequestContext,
        start: RequestStartLine,
        keep: bool,
        seq: int,
    ) -> None:
        self._conn = conn
        self.seq = seq
        self.started = time.perf_counter()  # the request's head has just been parsed
        self.context = context
        self._start = start
        self.keep_alive = keep
        self.max_body_size = conn.server.max_body_size
        self.close_callback: Callable[[], None] | None = None
        self.headers_written = False
        self.finished: asyncio.Future[None] = conn.loop.create_future()
        self._chunked = False
        self._remaining: int | None = None  # body bytes still owed to a Content-Length
        self._misframed_logged = False
        self.detached = False

    # tornado.httputil.HTTPConnection

    def set_close_callback(self, callback: Callable[[], None] | None) -> None:
        self.close_callback = callback

    def set_max_body_size(self, max_body_size: int) -> None:
        self.max_body_size = max_body_size

    def write_headers(
        self,
        start_line: RequestStartLine | ResponseStartLine,
        headers: HTTPHeaders,
        chunk: bytes | None = None,
        more: Mapping[str, str] | None = None,
    ) -> asyncio.Future[None]:
        """Tornado's write_headers; ``more`` adds headers kept outside HTTPHeaders (the
        handler base's own), written as they are named."""
        assert isinstance(start_line, ResponseStartLine)
        code = start_line.code
        request = self._start
        length = headers.get("Content-Length")
        bodiless = request.method == "HEAD" or code in (204, 304) or code < 200
        self._chunked = request.version == "HTTP/1.1" and not bodiless and length is None
        if self._chunked:
            headers["Transfer-Encoding"] = "chunked"
        elif length is not None and not bodiless:
            # Held to what it declared: a body longer or shorter than this would make the
            # client read the next answer from the wrong byte (see _body, finish).
            self._remaining = int(length) if length.isdigit() else None
        if not self.keep_alive and request.version == "HTTP/1.1":
            headers["Connection"] = "close"
        elif self.keep_alive and request.version == "HTTP/1.0":
            headers["Connection"] = "Keep-Alive"
        lines = [f"HTTP/1.1 {code} {start_line.reason}"]
        lines.extend(map(": ".join, headers.get_all()))
        if more:
            lines.extend(map(": ".join, more.items()))
        head = "\r\n".join(lines)
        separators = len(lines) - 1  # any other CR or LF would be header injection
        if head.count("\n") != separators or head.count("\r") != separators:
            raise ValueError("Illegal characters (CR or LF) in a response header")
        self.headers_written = True
        data = head.encode("latin-1") + b"\r\n\r\n"
        if chunk:
            data += self._body(chunk)
        # Out at the end of this step of the loop, with whatever else the step writes: a
        # stream's first events, or a whole short stream and its [DONE], in one write.
        return self._conn.send(data)

    def write(self, chunk: bytes) -> asyncio.Future[None]:
        if not chunk:
            return self._conn.done if not self._conn.closed else _failed()
        return self._conn.send(self._body(chunk))

    def finish(self) -> None:
        # Counted now, not when the connection's task next runs: the client may already
        # be sending its next request, which is then not taken for a pipelined one.
        if not self.finished.done():
            self._conn.answered += 1
        if self._remaining:
            self._misframed(f"{self._remaining} bytes fewer than")
        # The answer is whole: out now, before on_finish's bookkeeping.
        if self._chunked:
            self._conn.send(b"0\r\n\r\n", now=True)
        else:
            self._conn.uncork()
        if self._conn.requests_read < self.seq and not self.detached:
            # Answered before the request body arrived (a refusal): as Tornado does, close
            # once the answer is out rather than read an upload nobody wants.
            self.keep_alive = False
            self._conn.close()
        if not self.finished.done():
            self.finished.set_result(None)

    def detach(self) -> tornado.iostream.IOStream:
        """Hand the socket to Tornado's IOStream (WebSocket upgrades). The transport stops
        reading and lets go of the descriptor; the stream owns a duplicate of it."""
        self.detached = True
        return self._conn.detach()

    def _body(self, chunk: bytes) -> bytes:
        if self._chunked:
            return b"%x\r\n%s\r\n" % (len(chunk), chunk)
        remaining = self._remaining
        if remaining is not None:
            if len(chunk) > remaining:
                self._misframed("more than")
                chunk = chunk[:remaining]
            self._remaining = remaining - len(chunk)
        return chunk

    def _misframed(self, how: str) -> None:
        """A handler wrote a body that disagrees with its Content-Length: the bytes past it
        are dropped and the connection closes after this answer, so the client sees one
        broken answer, never the next one misread."""
        if not self._misframed_logged:
            self._misframed_logged = True
            log.error(
                "%s %s: the handler wrote %s the Content-Length it declared; closing the "
                "connection",
                self._start.method,
                self._start.path.partition("?")[0],
                how,
            )
        self.keep_alive = False
        self._remaining = 0


class _ServerProtocol(WriteFlow):
    """One client connection: httptools feeds events into a queue that one task per
    connection hands to the application's delegate, a request at a time."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.limits = server.limits
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.closed = False
        # Monotonic times past which the sweep ends the connection: a wait on the client
        # to send (head, body, next request) and a wait on it to read.
        self.read_deadline: float | None = None
        self.write_deadline: float | None = None
        self.write_backlog = 0  # our bytes the client had not taken when last looked at
        self._events: collections.deque[tuple[Any, ...]] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._waiting_head = False  # the task waits for the next request's head
        self._queued_bytes = 0
        self._corked: list[bytes] | None = None
        self._corked_bytes = 0
        # What send() returns while the socket keeps up: one resolved future, shared,
        # rather than a new one per write (a stream writes once per event).
        # Looked up once: each get_running_loop() is a getpid(2) system call on 3.11.
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.done.set_result(None)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._awaiting_head = False  # from a message's first byte to the end of its head
        self._head_size = 0  # of the head's parts parsed so far
        self._head_unseen = 0  # bytes of a head that httptools holds but has not handed on
        self._progress = False  # a part of a head was parsed during this read
        self._head_too_large = False
        self.heads_parsed = 0  # requests on this connection whose head was parsed
        self.requests_read = 0  # requests read to their end
        self.answered = 0  # requests whose answer is finished
        self._backlogged = False  # reading paused: too much body waits for the handler
        self._pipelined = False  # reading paused: a request waits behind the one answered
        self._reading_paused = False
        self._upgrading = False  # a WebSocket handshake: the socket goes to Tornado
        self._replay: bytes | None = None  # a head to parse again, its Upgrade declined
        self._leftover = b""
        self._exchange: Exchange | None = None
        self._task: asyncio.Task[None] | None = None
        self._peer = ""
        self._scheme = "https" if server.tls is not None else "http"
        self._own_context: RequestContext | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self._peer = peer[0] if isinstance(peer, tuple) else "127.0.0.1"
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections.add(self)
        self._task = self.loop.create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        if self._upgrading:
            self._leftover += data  # reading is paused: at most one read's worth
            return
        self._progress = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgrade(data[upgrade.args[0] :] if upgrade.args else b"")
            return
        except httptools.HttpParserInvalidMethodError:
            method = data.split(b" ", 1)[0][:20].decode("latin-1", "replace")
            self._method_not_allowed(method)
            return
        except httptools.HttpParserError:
            self._refuse(refusal(400, "The request is not valid HTTP/1.1.", "malformed_request"))
            return
        if self._awaiting_head:
            # A head not ended yet. httptools hands on a header once it has ended, so a
            # read in which no part of the head was parsed counts whole (a header
            # arriving a piece at a time), and one in which a part was counts from there:
            # at most one read's worth goes uncounted, never the whole pipelined
            # requests that preceded the head in the same read.
            self._head_unseen = 0 if self._progress else self._head_unseen + len(data)
        if self._head_too_large or self._head_size + self._head_unseen > MAX_HEADER_BYTES:
            self._refuse(
                refusal(
                    431,
                    f"The request's headers exceed {MAX_HEADER_BYTES} bytes.",
                    "headers_too_large",
                )
            )
        elif self.heads_parsed > self.answered + 1 and not self._pipelined:
            # A request waits behind one still being answered: read no further until
            # that answer is done, so a client that sends without reading queues at most
            # what one read held.
            self._pipelined = True
            self._set_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self.read_deadline = self.write_deadline = None
        self.server.connections.discard(self)
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_result(None)
        # Requests read but not yet started could only be answered into a closed socket.
        self._events.clear()
        self._queued_bytes = 0
        self._push(("lost",))
        exchange = self._exchange
        if exchange is not None:  # the handler learns now, even mid-response
            self._call_close_callback()
            if not exchange.finished.done():
                exchange.finished.set_result(None)

    def pause_writing(self) -> None:
        super().pause_writing()
        self._watch_writes()

    def resume_writing(self) -> None:
        super().resume_writing()
        if not self.closed:  # once closed, what is left must still go out in time
            self.write_deadline = None

    def _watch_writes(self) -> None:
        """Start the write deadline: the sweep moves it on whenever the client has taken
        some of our bytes since it last looked, and aborts the connection past it."""
        if self.transport is not None and self.write_deadline is None:
            self.write_backlog = self.transport.get_write_buffer_size()
            self.write_deadline = time.monotonic() + self.limits.write_timeout

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._awaiting_head = True
        self._progress = True
        self._head_size = 0
        self._head_unseen = 0
        if self._waiting_head:  # the client has started: it has header_timeout to end
            self.read_deadline = time.monotonic() + self.limits.header_timeout

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        self._progress = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._head_size += len(name) + len(value) + 4
        self._progress = True

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self._head_unseen = 0
        if self._head_size > MAX_HEADER_BYTES:
            self._head_too_large = True
            return
        parser = self.parser
        if parser.should_upgrade() and not self._websocket_handshake():
            # Any Upgrade but WebSocket (curl --http2 asks for h2c; CONNECT is refused)
            # is declined and the request served as HTTP/1.1, its body included. llhttp
            # stops parsing at such a head, so the head is parsed again without the
            # Upgrade by a fresh parser (see _upgrade); nothing is delivered for now.
            self._replay = self._head_without_upgrade()
            return
        version = "HTTP/" + parser.get_http_version()
        start = RequestStartLine(parser.get_method().decode(), self._url.decode("latin-1"), version)
        # httptools has already refused malformed names and values, so a first occurrence
        # is set directly; HTTPHeaders.add (which checks each again) only for repeats.
        headers = HTTPHeaders()
        seen: set[bytes] = set()
        for name, value in self._headers:
            lowered = name.lower()
            if lowered in seen:
                headers.add(name.decode("latin-1"), value.decode("latin-1"))
            else:
                seen.add(lowered)
                headers[name.decode("latin-1")] = value.decode("latin-1")
        self.heads_parsed += 1
        self._push(("head", start, headers, parser.should_keep_alive(), self.heads_parsed))

    def on_body(self, body: bytes) -> None:
        self._push(("body", body))

    def on_message_complete(self) -> None:
        if self._replay is not None:
            return  # the declined upgrade's head: its message is read again
        self.requests_read += 1
        self._push(("end",))

    # upgrades

    def _websocket_handshake(self) -> bool:
        return any(
            name.lower() == b"upgrade" and b"websocket" in value.lower()
            for name, value in self._headers
        )

    def _head_without_upgrade(self) -> bytes:
        parser = self.parser
        lines = [
            b"%s %s HTTP/%s" % (parser.get_method(), self._url, parser.get_http_version().encode())
        ]
        for name, value in self._headers:
            lowered = name.lower()
            if lowered == b"upgrade":
                continue
            if lowered == b"connection":
                tokens = [t for t in value.split(b",") if t.strip().lower() != b"upgrade"]
                if not tokens:
                    continue
                value = b",".join(tokens).strip()
            lines.append(name + b": " + value)
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def _upgrade(self, rest: bytes) -> None:
        if self.parser.get_method() == b"CONNECT":
            self._method_not_allowed("CONNECT")
            return
        replay, self._replay = self._replay, None
        if replay is None:  # a WebSocket handshake: the handler takes the socket
            self._upgrading = True
            self._leftover = rest
            self._set_reading()
            return
        self.parser = httptools.HttpRequestParser(self)
        self.data_received(replay + rest)

    # the connection's task

    def _set_reading(self) -> None:
        paused = self._backlogged or self._pipelined or self._upgrading
        transport = self.transport
        if paused != self._reading_paused and transport is not None and not self.closed:
            self._reading_paused = paused
            if paused:
                transport.pause_reading()
            else:
                transport.resume_reading()

    def _push(self, event: tuple[Any, ...]) -> None:
        self._events.append(event)
        if event[0] == "body":
            self._queued_bytes += len(event[1])
            if self._queued_bytes > READ_HIGH_WATER and not self._backlogged:
                self._backlogged = True
                self._set_reading()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _next(self, allowed: float) -> tuple[Any, ...]:
        """The next event; waiting for one may take ``allowed`` seconds (the sweep ends the
        connection past it)."""
        events = self._events
        if not events:
            self.read_deadline = time.monotonic() + allowed
            try:
                while not events:
                    self._waiter = self.loop.create_future()
                    await self._waiter
            finally:
                self._waiter = None
                self.read_deadline = None
        event = events.popleft()
        if event[0] == "body":
            self._queued_bytes -= len(event[1])
            if self._backlogged and self._queued_bytes <= READ_HIGH_WATER // 2:
                self._backlogged = False
                self._set_reading()
        return event

    async def _serve(self) -> None:
        limits = self.limits
        wait = limits.header_timeout  # a new connection is expected to send at once
        try:
            while True:
                self._waiting_head = True
                try:
                    event = await self._next(wait)
                finally:
                    self._waiting_head = False
                if event[0] == "lost":
                    return
                if event[0] != "head":
                    continue  # the remains of a request we stopped delivering
                if not await self._exchange_one(*event[1:]):
                    return
                if self._write_ready is not None:
                    # A client that sends requests without reading the answers: the next
                    # answer waits until this one is taken (the write deadline applies).
                    await self._write_ready
                    if self.closed:
                        return
                if self._pipelined and self.heads_parsed <= self.answered + 1:
                    self._pipelined = False
                    self._set_reading()
                wait = limits.header_timeout if self._awaiting_head else limits.keepalive_timeout
        except Exception:
            log.exception("connection from %s failed", self._peer)
            self.close()
        finally:
            self._drop()

    async def _exchange_one(
        self, start: RequestStartLine, headers: HTTPHeaders, keep: bool, seq: int
    ) -> bool:
        """Drive one request through the application; True to go on with the next."""
        exchange = Exchange(self, self._context(headers), start, keep, seq)
        self._exchange = exchange
        delegate = self.server.delegate.start_request(self, exchange)
        received = 0
        body_timeout = self.limits.body_timeout
        try:
            try:
                ready = delegate.headers_received(start, headers)
            except HTTPInputError as exc:  # e.g. HTTP/1.1 without Host, as Tornado refuses
                self._refuse(refusal(400, str(exc), "malformed_request"))
                return False
            if ready is not None:
                await ready
            if (
                headers.get("Expect", "").lower() == "100-continue"
                and not exchange.headers_written
                and not self.closed
            ):
                self.send(b"HTTP/1.1 100 Continue\r\n\r\n", now=True)
            while True:
                event = await self._next(body_timeout)
                kind = event[0]
                if kind == "lost":
                    delegate.on_connection_close()
                    self._call_close_callback()
                    return False
                if kind == "end":
                    if not exchange.finished.done():
                        delegate.finish()
                    break
                if kind == "body" and not exchange.finished.done():
                    received += len(event[1])
                    if received > exchange.max_body_size:
                        self.close()  # as Tornado does: past the hard cap, drop the connection
                        delegate.on_connection_close()
                        self._call_close_callback()
                        return False
                    more = delegate.data_received(event[1])
                    if more is not None:
                        await more
            await exchange.finished  # connection_lost resolves it too
        finally:
            self._exchange = None
        if exchange.detached:
            return False
        transport = self.transport
        if self._upgrading or not exchange.keep_alive or self.closed:
            self.close()
            return False
        # A write that found the client gone closes the transport at once but tells us
        # (connection_lost) a step later: no next request for a departed client.
        return transport is not None and not transport.is_closing()

    def _call_close_callback(self) -> None:
        exchange = self._exchange
        if exchange is not None and exchange.close_callback is not None:
            callback, exchange.close_callback = exchange.close_callback, None
            callback()

    def _context(self, headers: HTTPHeaders) -> RequestContext:
        trusted = self.server.trusted
        if not trusted or not trusted.trusts(self._peer):
            # The same for every request on this connection.
            if self._own_context is None:
                self._own_context = RequestContext(self._peer, self._scheme)
            return self._own_context
        client, scheme = trusted.resolve(self._peer, headers)
        return RequestContext(client, scheme or self._scheme)

    def expire(self) -> None:
        """The sweep found the client past a deadline to send."""
        self.read_deadline = None
        if self._waiting_head and not self._awaiting_head:
            self.close()  # idle between requests (or never started one): nothing to say
            return
        timeout = self.limits.header_timeout if self._waiting_head else self.limits.body_timeout
        what = "head" if self._waiting_head else "body"
        self._refuse(
            refusal(
                408,
                f"The request's {what} did not arrive in time ({timeout:g} s).",
                "request_timeout",
            )
        )

    # output

    def send(self, data: bytes, now: bool = False) -> asyncio.Future[None]:
        """Queue bytes for the socket. Everything sent during one step of the event loop
        goes out in one write at the end of that step (call_soon, no timer): SSE events
        that arrived together from upstream cost one system call, not one each, and
        nothing waits for more data. ``now`` writes at once (with anything queued), and
        so does a step that has queued CORK_LIMIT bytes: the transport then says at once
        whether the client keeps up, and a handler writing in a loop gets a pending
        future to wait on rather than filling memory without ever yielding."""
        if self.transport is None or self.closed:
            return _failed()
        corked = self._corked
        if corked is not None:
            corked.append(data)
            self._corked_bytes += len(data)
            if now or self._corked_bytes >= CORK_LIMIT:
                self.uncork()
        elif now or len(data) >= CORK_LIMIT:
            self.transport.write(data)
        else:
            self._corked = [data]
            self._corked_bytes = len(data)
            self.loop.call_soon(self.uncork)
        return self._write_ready if self._write_ready is not None else self.done

    def uncork(self) -> None:
        corked, self._corked = self._corked, None
        if corked and self.transport is not None and not self.transport.is_closing():
            self.transport.write(corked[0] if len(corked) == 1 else b"".join(corked))

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.uncork()
            self.closed = True
            if self.transport.get_write_buffer_size():
                self._watch_writes()  # a client that never reads must not hold it open
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.closed = True
            self.transport.abort()

    def _refuse(self, answer: bytes) -> None:
        if self.transport is not None and not self.closed:
            if self._exchange is None or not self._exchange.headers_written:
                self.send(answer)
            self.close()

    def _method_not_allowed(self, method: str) -> None:
        self._refuse(refusal(405, f"Method {method} is not allowed.", "method_not_allowed"))

    def detach(self) -> tornado.iostream.IOStream:
        self.uncork()  # the 101 answer goes out before the stream takes over
        transport = self.transport
        assert transport is not None
        transport.pause_reading()
        if self.server.tls is not None:  # the TLS session stays with the transport
            self.closed = True
            self.transport = None
            self.server.connections.discard(self)
            stream = relay_to_stream(transport)
            if self._leftover:  # a client that sent frames before our 101: refuse it
                stream.close()
            return stream
        sock = transport.get_extra_info("socket")
        duplicate = socket.socket(fileno=os.dup(sock.fileno()))
        duplicate.setblocking(False)
        self.closed = True
        self.transport = None
        self.server.connections.discard(self)
        transport.close()  # closes our descriptor only; the duplicate keeps the socket open
        stream = tornado.iostream.IOStream(duplicate)
        if self._leftover:  # a client that sent frames before our 101: refuse it
            stream.close()
        return stream

    def _drop(self) -> None:
        """The connection's task has ended. The connection stays in the server's set until
        connection_lost: a transport still flushing its last bytes is held to the write
        deadline by the sweep, and ended by close_all_connections."""
        if self.transport is None:
            self.server.connections.discard(self)
        elif not self.closed:
            self.close()


class _Overloaded(asyncio.Protocol):
    """A connection past the cap: a 503 at once and our side shut, then whatever the
    client sends is read and dropped until it closes, for at most OVERLOAD_LINGER seconds
    (closing on unread data would make it see a reset rather than the answer)."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport = transport
        self.server.refusing.add(self)
        transport.write(overload_answer())
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(OVERLOAD_LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        pass

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.refusing.discard(self)
        if self._timer is not None:
            self._timer.cancel()


class _Listener:
    """Accepts connections on one listening socket (instead of loop.create_server, which
    on uvloop logs every failed accept with a traceback: out of descriptors, that is a
    line per connection attempt, as fast as clients retry)."""

    def __init__(self, server: HttpServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self._accepting = False
        self._retry: asyncio.TimerHandle | None = None
        sock.setblocking(False)

    def resume(self) -> None:
        self._retry = None
        if not self._accepting:
            self.loop.add_reader(self.sock.fileno(), self._accept)
            self._accepting = True

    def pause(self) -> None:
        if self._accepting:
            self.loop.remove_reader(self.sock.fileno())
            self._accepting = False

    def close(self) -> None:
        self.pause()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self.sock.close()

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client left before we took it
            except OSError as exc:
                # Out of descriptors (EMFILE, ENFILE) or memory: accepting again at once
                # would fail again. Clients wait in the backlog meanwhile.
                self.server.report_accept_error(exc)
                self.pause()
                self._retry = self.loop.call_later(ACCEPT_RETRY_SECONDS, self.resume)
                return
            self.server.adopt(conn)


class HttpServer:
    """Serves ``delegate`` (a tornado.web.Application) on the sockets given to start()."""

    def __init__(
        self,
        delegate: HTTPServerConnectionDelegate,
        limits: ServerLimits | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.delegate = delegate
        self.tls = tls  # serve HTTPS (and WSS) with this context
        self.limits = limits = limits or ServerLimits()
        self.max_body_size = limits.max_body_size
        self.trusted = TrustedProxies(limits.forwarded_allow_ips)
        self.connections: set[_ServerProtocol] = set()
        self.cap = limits.max_connections
        self.refusing: set[_Overloaded] = set()  # connections past the cap, being refused
        self._opening: set[asyncio.Task[Any]] = set()
        self._listeners: list[_Listener] = []
        self._sweeper: asyncio.TimerHandle | None = None
        self._accept_log = _Throttled()
        self._overload_log = _Throttled()

    @classmethod
    def for_settings(cls, delegate: HTTPServerConnectionDelegate, settings: Settings) -> HttpServer:
        """The server CONDUIT_HTTP_SERVER names, held to the settings' limits."""
        limits = ServerLimits.from_settings(settings)
        tls = server_context(settings)
        if settings.http_server == "tornado":
            from .tornado_server import TornadoHttpServer  # it builds on this module

            return TornadoHttpServer(delegate, limits, tls)
        return cls(delegate, limits, tls)

    async def start(self, sockets: list[socket.socket]) -> None:
        self.cap = self.limits.connection_cap()
        self.listen(sockets)
        self._sweep()

    def listen(self, sockets: list[socket.socket]) -> None:
        """Accept on ``sockets``, each accepted socket going to adopt()."""
        for sock in sockets:
            listener = _Listener(self, sock)
            listener.resume()
            self._listeners.append(listener)

    def adopt(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        factory: Callable[[], asyncio.Protocol]
        if len(self.connections) + len(self._opening) < self.cap:
            factory = lambda: _ServerProtocol(self)  # noqa: E731
        else:
            self._overload_log(
                logging.WARNING, "at the connection limit (%d): answering 503", self.cap
            )
            if len(self.refusing) >= MAX_OVERLOADED:
                sock.close()  # refusing costs a descriptor too: past this, no answer
                return
            factory = lambda: _Overloaded(self)  # noqa: E731
        if self.tls is None:
            opening = loop.connect_accepted_socket(factory, sock)
        else:  # the handshake is held to the head's deadline
            handshake = self.limits.header_timeout
            opening = loop.connect_accepted_socket(
                factory, sock, ssl=self.tls, ssl_handshake_timeout=handshake
            )
        task = loop.create_task(opening)
        self._opening.add(task)
        task.add_done_callback(functools.partial(self._opened, sock))

    def _opened(self, sock: socket.socket, task: asyncio.Task[Any]) -> None:
        self._opening.discard(task)
        if task.cancelled() or task.exception() is not None:
            # A transport that got the socket has closed it (and the socket object);
            # one cancelled before it started never took it.
            sock.close()
            if not task.cancelled():
                log.debug("a connection failed to open: %s", task.exception())

    def report_accept_error(self, exc: OSError) -> None:
        self._accept_log(
            logging.ERROR,
            "cannot accept connections (%s); retrying every %g s",
            exc.strerror or exc,
            ACCEPT_RETRY_SECONDS,
        )

    def _sweep(self) -> None:
        """End connections past a deadline (one timer for all of them)."""
        now = time.monotonic()
        write_timeout = self.limits.write_timeout
        for conn in list(self.connections):
            if conn.write_deadline is not None and conn.transport is not None:
                backlog = conn.transport.get_write_buffer_size()
                if backlog < conn.write_backlog:  # the client is reading, if slowly
                    conn.write_backlog = backlog
                    conn.write_deadline = now + write_timeout
                elif now > conn.write_deadline:
                    conn.abort()
                    continue
            if conn.read_deadline is not None and now > conn.read_deadline:
                conn.expire()
        limits = self.limits
        shortest = min(
            limits.header_timeout,
            limits.body_timeout,
            limits.write_timeout,
            limits.keepalive_timeout,
        )
        every = min(SWEEP_SECONDS, shortest / 2)
        self._sweeper = asyncio.get_running_loop().call_later(every, self._sweep)

    def stop_listening(self) -> None:
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()

    async def close_all_connections(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._opening:
            await asyncio.wait(list(self._opening), timeout=5)
        for refused in list(self.refusing):
            refused.abort()
        tasks = [c._task for c in self.connections if c._task is not None]
        for conn in list(self.connections):
            conn.close()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for conn in list(self.connections):  # still flushing to a client that does not read
            conn.abort()
        await asyncio.sleep(0)  # their connection_lost runs

    async def stop(self) -> None:
        self.stop_listening()
        await self.close_all_connections()
