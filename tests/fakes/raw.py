"""A loopback HTTP/1.1 server that answers byte for byte, for the provider client's tests:
every wire shape (chunked, gzip, early close, stalls, huge headers, TLS) is the real one,
and it counts what reached it (connections, requests, connections still open).

An ``Answer`` writes the reply to one request; the connection stays open for the next
request unless the answer closed it. The fault modes below are the ones the tests need.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from typing import Any

from conduit_tornado.core.settings import Settings
from conduit_tornado.routing.upstream import Upstream

#: (request, writer, index of this request on its connection)
Answer = Callable[["Received", asyncio.StreamWriter, int], Awaitable[None]]
#: The connection's reader, for answers that wait for the client to go away.
_reader: ContextVar[asyncio.StreamReader] = ContextVar("raw_reader")


@dataclass
class Received:
    method: str
    target: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    chunked: bool


class RawServer:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.open = 0
        self.requests: list[Received] = []
        self.server: asyncio.Server | None = None
        self.port = 0
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> RawServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        _reader.set(reader)  # each connection's handler is a task: its own context
        try:
            index = 0
            while not writer.is_closing():
                received = await read_request(reader)
                if received is None:
                    break
                self.requests.append(received)
                await self.answer(received, writer, index)
                index += 1
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self.open -= 1
            writer.close()
            self._handlers.discard(task)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._handlers):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._handlers, return_exceptions=True)


async def read_request(reader: asyncio.StreamReader) -> Received | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None  # the client closed an idle connection
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    chunked = headers.get("transfer-encoding", "").lower() == "chunked"
    if chunked:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            body += (await reader.readexactly(size + 2))[:size]
            if size == 0:
                break
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Received(method, target, headers, body, chunked)


def response(
    body: bytes = b"{}", status: int = 200, headers: dict[str, str] | None = None
) -> bytes:
    head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def fixed(body: bytes = b'{"ok": true}', **kw: object) -> Answer:
    """The same answer to every request."""
    raw = response(body, **kw)  # type: ignore[arg-type]

    async def answer(req: Received, writer: asyncio.StreamWriter, index: int) -> None:
        writer.write(raw)
        await writer.drain()

    return answer


async def until_client_leaves() -> None:
    """Read (and drop) whatever the client sends until it closes the connection."""
    reader = _reader.get()
    while await reader.read(65536):
        pass


def stall_from(nth: int) -> Answer:
    """Answer ``{}`` to requests before the ``nth`` (counted over the server), then never
    answer, until the client closes the connection: a provider that takes its time."""
    count = 0

    async def answer(req: Received, writer: asyncio.StreamWriter, index: int) -> None:
        nonlocal count
        count += 1
        if count > nth:
            await until_client_leaves()
            writer.close()
            return
        writer.write(response())
        await writer.drain()

    return answer


def drop_from(nth: int, delay: float = 0.0) -> Answer:
    """Answer the first ``nth`` requests (after ``delay``, so calls made together open a
    connection each), then close each connection once a request has been read, without a
    byte of answer: the keep-alive race, seen from the client."""
    count = 0

    async def answer(req: Received, writer: asyncio.StreamWriter, index: int) -> None:
        nonlocal count
        count += 1
        if count > nth:
            writer.close()
            return
        await asyncio.sleep(delay)
        writer.write(response())
        await writer.drain()

    return answer


def close_after_answer() -> Answer:
    """Answer keep-alive, then close the connection shortly after (an idle timeout on
    the provider's side shorter than ours)."""

    async def answer(req: Received, writer: asyncio.StreamWriter, index: int) -> None:
        writer.write(response())
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()

    return answer


@cache
def gzip_bomb(inflated: int) -> bytes:
    """``inflated`` zero bytes, gzipped (about a thousandth of the size), built a
    megabyte at a time so the test process never holds the inflated form."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    out = [packer.compress(zeros) for _ in range(inflated >> 20)]
    out.append(packer.flush())
    return b"".join(out)


def gzipped(data: bytes) -> Answer:
    async def answer(req: Received, writer: asyncio.StreamWriter, index: int) -> None:
        writer.write(response(data, headers={"Content-Encoding": "gzip"}))
        await writer.drain()

    return answer


def chunks(pieces: list[bytes], delay: float = 0.0, hold: asyncio.Event | None = None) -> Answer:
    """A chunked answer written a piece at a time (``delay`` between pieces); with
    ``hold``, the rest waits for the event after the first piece."""

    async def answer(req: Received, writer: asyncio.StreamWriter, index: int) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for i, piece in enumerate(pieces):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            if i == 0 and hold is not None:
                await hold.wait()
            if delay:
                await asyncio.sleep(delay)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    return answer


def endless(piece: bytes) -> Answer:
    """A chunked answer that never ends (until the client goes)."""

    async def answer(req: Received, writer: asyncio.StreamWriter, index: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        frame = b"%x\r\n%s\r\n" % (len(piece), piece)
        while True:
            writer.write(frame)
            await writer.drain()

    return answer


@contextlib.asynccontextmanager
async def serving(
    answer: Answer, ssl_context: ssl.SSLContext | None = None, **settings: Any
) -> AsyncIterator[tuple[RawServer, Upstream]]:
    """A raw server giving ``answer``, and an Upstream built from Settings(**settings);
    both closed after."""
    server = await RawServer(answer).start(ssl_context)
    upstream = Upstream(Settings(**settings))
    try:
        yield server, upstream
    finally:
        await upstream.close()
        await server.stop()
