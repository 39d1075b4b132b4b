"""A lean HTTP/1.1 server for Tornado applications: asyncio protocols and httptools' C
parser in place of Tornado's IOStream and pure-Python HTTP1Connection.

Measured on this machine (bench/floor.py, one core): a trivial handler costs ~0.27 ms of
CPU per request under Tornado's own server, ~0.16 ms with Tornado's server and no
RequestHandler, ~0.01 ms with httptools on a bare protocol. The handlers stay Tornado
RequestHandlers: each request gets an ``Exchange``, our implementation of Tornado's
``HTTPConnection`` interface, and the application's delegate is driven exactly as
Tornado's server drives it (headers, then body chunks once ``prepare`` is done, then
finish), so routing, streaming bodies, flushes with backpressure, close callbacks and
WebSocket upgrades (``detach``) all keep working. The Jupyter extension does not use this
module: inside Jupyter, Jupyter's own Tornado server serves the same handlers.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

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
from tornado.netutil import is_valid_ip

from .write_flow import WriteFlow

log = logging.getLogger("conduit.http")

MAX_HEADER_BYTES = 64 * 1024
READ_HIGH_WATER = 1 << 20  # stop reading while this much request body waits for a handler
SWEEP_SECONDS = 5.0
_CLOSED = tornado.iostream.StreamClosedError


def _refusal(status: int, reason: str, message: str, code: str) -> bytes:
    """An answer the parser gives by itself (the request never reached a handler), in
    OpenAI's error shape like every other answer; the connection closes after it."""
    body = orjson.dumps(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": code,
            }
        }
    )
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nX-Request-Id: req_{secrets.token_hex(12)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body


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
        self._chunked = (
            request.version == "HTTP/1.1"
            and request.method != "HEAD"
            and code not in (204, 304)
            and not 100 <= code < 200
            and "Content-Length" not in headers
        )
        if self._chunked:
            headers["Transfer-Encoding"] = "chunked"
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
            data += self._frame(chunk)
        # Out at the end of this step of the loop, with whatever else the step writes: a
        # stream's first events, or a whole short stream and its [DONE], in one write.
        return self._conn.send(data)

    def write(self, chunk: bytes) -> asyncio.Future[None]:
        if not chunk:
            return self._conn.done if not self._conn.closed else _failed()
        return self._conn.send(self._frame(chunk))

    def finish(self) -> None:
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

    def _frame(self, chunk: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(chunk), chunk) if self._chunked else chunk


class _ServerProtocol(WriteFlow):
    """One client connection: httptools feeds events into a queue that one task per
    connection hands to the application's delegate, a request at a time."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.closed = False
        self.idle_since: float | None = time.monotonic()
        self._events: collections.deque[tuple[Any, ...]] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._queued_bytes = 0
        self._corked: list[bytes] | None = None
        # What send() returns while the socket keeps up: one resolved future, shared,
        # rather than a new one per write (a stream writes once per event).
        # Looked up once: each get_running_loop() is a getpid(2) system call on 3.11.
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.done.set_result(None)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._awaiting_head = False  # from a message's first byte to the end of its head
        self._pending_head = 0
        self._head_size = 0
        self._head_too_large = False
        self.heads_parsed = 0  # requests on this connection whose head was parsed
        self.requests_read = 0  # requests read to their end
        self._upgrading = False
        self._leftover = b""
        self._exchange: Exchange | None = None
        self._task: asyncio.Task[None] | None = None
        self._peer = ""
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
            self._leftover += data
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgrading = True
            self._leftover = data[upgrade.args[0] :] if upgrade.args else b""
            if self.transport is not None:
                self.transport.pause_reading()
            return
        except httptools.HttpParserInvalidMethodError:
            method = data.split(b" ", 1)[0][:20].decode("latin-1", "replace")
            self._refuse(
                _refusal(
                    405,
                    "Method Not Allowed",
                    f"Method {method} is not allowed.",
                    "method_not_allowed",
                )
            )
            return
        except httptools.HttpParserError:
            self._refuse(
                _refusal(
                    400, "Bad Request", "The request is not valid HTTP/1.1.", "malformed_request"
                )
            )
            return
        if self._awaiting_head:  # a head that has not ended yet: bound what it may take
            self._pending_head += len(data)
        if self._head_too_large or self._pending_head > MAX_HEADER_BYTES:
            self._refuse(
                _refusal(
                    431,
                    "Request Header Fields Too Large",
                    f"The request's headers exceed {MAX_HEADER_BYTES} bytes.",
                    "headers_too_large",
                )
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self.server.connections.discard(self)
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_result(None)
        self._push(("lost",))
        exchange = self._exchange
        if exchange is not None:  # the handler learns now, even mid-response
            self._call_close_callback()
            if not exchange.finished.done():
                exchange.finished.set_result(None)

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._awaiting_head = True
        self._pending_head = 0
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._head_size += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self._pending_head = 0
        if self._head_size > MAX_HEADER_BYTES:
            self._head_too_large = True
            return
        self.idle_since = None
        parser = self.parser
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
        self.requests_read += 1
        self._push(("end",))

    # the connection's task

    def _push(self, event: tuple[Any, ...]) -> None:
        self._events.append(event)
        if event[0] == "body":
            self._queued_bytes += len(event[1])
            if self._queued_bytes > READ_HIGH_WATER and self.transport is not None:
                self.transport.pause_reading()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _next(self) -> tuple[Any, ...]:
        while not self._events:
            self._waiter = self.loop.create_future()
            await self._waiter
            self._waiter = None
        event = self._events.popleft()
        if event[0] == "body":
            self._queued_bytes -= len(event[1])
            transport = self.transport
            if self._queued_bytes <= READ_HIGH_WATER // 2 and transport and not self._upgrading:
                transport.resume_reading()
        return event

    async def _serve(self) -> None:
        try:
            while True:
                event = await self._next()
                if event[0] == "lost":
                    return
                if event[0] != "head":
                    continue  # the remains of a request we stopped delivering
                if not await self._exchange_one(*event[1:]):
                    return
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
        try:
            try:
                ready = delegate.headers_received(start, headers)
            except HTTPInputError as exc:  # e.g. HTTP/1.1 without Host, as Tornado refuses
                self._refuse(_refusal(400, "Bad Request", str(exc), "malformed_request"))
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
                event = await self._next()
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
        if self._upgrading or not exchange.keep_alive or self.closed:
            self.close()
            return False
        self.idle_since = time.monotonic()
        return True

    def _call_close_callback(self) -> None:
        exchange = self._exchange
        if exchange is not None and exchange.close_callback is not None:
            callback, exchange.close_callback = exchange.close_callback, None
            callback()

    def _context(self, headers: HTTPHeaders) -> RequestContext:
        if not self.server.xheaders:  # the same for every request on this connection
            if self._own_context is None:
                self._own_context = RequestContext(self._peer, "http")
            return self._own_context
        ip, protocol = self._peer, "http"
        forwarded = headers.get("X-Forwarded-For", "").split(",")[-1].strip()
        candidate = headers.get("X-Real-Ip", forwarded).strip()
        if candidate and is_valid_ip(candidate):
            ip = candidate
        proto = headers.get("X-Scheme", headers.get("X-Forwarded-Proto", ""))
        proto = proto.split(",")[-1].strip().lower()
        if proto in ("http", "https"):
            protocol = proto
        return RequestContext(ip, protocol)

    # output

    def send(self, data: bytes, now: bool = False) -> asyncio.Future[None]:
        """Queue bytes for the socket. Everything sent during one step of the event loop
        goes out in one write at the end of that step (call_soon, no timer): SSE events
        that arrived together from upstream cost one system call, not one each, and
        nothing waits for more data. ``now`` writes at once (with anything queued)."""
        if self.transport is None or self.closed:
            return _failed()
        if self._corked is not None:
            self._corked.append(data)
            if now:
                self.uncork()
        elif now:
            self.transport.write(data)
        else:
            self._corked = [data]
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
            self.transport.close()

    def _refuse(self, answer: bytes) -> None:
        if self.transport is not None and not self.closed:
            if self._exchange is None or not self._exchange.headers_written:
                self.send(answer)
            self.close()

    def detach(self) -> tornado.iostream.IOStream:
        self.uncork()  # the 101 answer goes out before the stream takes over
        transport = self.transport
        assert transport is not None
        transport.pause_reading()
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
        self.server.connections.discard(self)
        if self.transport is not None and not self.closed:
            self.close()


class HttpServer:
    """Listens on the given sockets and serves ``delegate`` (a tornado.web.Application)."""

    def __init__(
        self,
        delegate: HTTPServerConnectionDelegate,
        *,
        xheaders: bool = False,
        max_body_size: int = 100 * 1024 * 1024,
        idle_timeout: float = 75.0,
    ) -> None:
        self.delegate = delegate
        self.xheaders = xheaders
        self.max_body_size = max_body_size
        self.idle_timeout = idle_timeout
        self.connections: set[_ServerProtocol] = set()
        self._servers: list[asyncio.Server] = []
        self._sweeper: asyncio.TimerHandle | None = None

    async def start(self, sockets: list[socket.socket]) -> None:
        loop = asyncio.get_running_loop()
        for sock in sockets:
            server = await loop.create_server(lambda: _ServerProtocol(self), sock=sock)
            self._servers.append(server)
        self._sweep()

    def _sweep(self) -> None:
        """Close connections idle past the timeout (one timer for all of them)."""
        cutoff = time.monotonic() - self.idle_timeout
        for conn in list(self.connections):
            if conn.idle_since is not None and conn.idle_since < cutoff:
                conn.close()
        every = min(SWEEP_SECONDS, self.idle_timeout / 2)
        self._sweeper = asyncio.get_running_loop().call_later(every, self._sweep)

    def stop_listening(self) -> None:
        for server in self._servers:
            server.close()
        self._servers.clear()

    async def close_all_connections(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        tasks = [c._task for c in self.connections if c._task is not None]
        for conn in list(self.connections):
            conn.close()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    async def stop(self) -> None:
        self.stop_listening()
        await self.close_all_connections()
