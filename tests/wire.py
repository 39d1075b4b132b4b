"""Byte-level HTTP/1.1 client helpers and a small server harness for the server tests
(tests/test_http_server.py, tests/test_server_*.py): both of our HTTP servers, ours and
the Tornado fallback, behind the same ``serve`` so each test can run on both."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import tornado.web

from conduit_tornado.gateway import bind
from conduit_tornado.server.http import HttpServer
from conduit_tornado.server.limits import ServerLimits
from conduit_tornado.server.tornado_server import TornadoHttpServer

KINDS = ("conduit", "tornado")


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response, framed by Content-Length or chunked encoding, as a client reads it."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status_line, *lines = head.strip().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            body += (await reader.readexactly(size + 2))[:-2]
            if size == 0:
                break
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        body = await reader.read()
    return int(status_line.split()[1]), headers, body


async def closed_by_server(reader: asyncio.StreamReader, within: float = 10.0) -> bytes:
    """Everything left until the server closes (or resets) the connection; fails the test
    if it has not within ``within`` seconds (a generous bound on a deadline set small)."""
    data = b""
    async with asyncio.timeout(within):
        with contextlib.suppress(ConnectionResetError):
            while chunk := await reader.read(65536):
                data += chunk
    return data


@contextlib.asynccontextmanager
async def serve(
    kind: str,
    handlers: list[tuple[str, type[tornado.web.RequestHandler]]] | tornado.web.Application,
    limits: ServerLimits | None = None,
    *,
    receive_buffer: int | None = None,
    **app_settings: Any,
) -> AsyncIterator[tuple[HttpServer, int]]:
    """An application (or one made of ``handlers``) on server ``kind`` on a free loopback
    port: (server, port).
    ``receive_buffer`` fixes the accepted sockets' kernel receive buffer, so a test can
    tell "the server stopped reading" from "the kernel is still buffering"."""
    app = (
        handlers
        if isinstance(handlers, tornado.web.Application)
        else tornado.web.Application(handlers, **app_settings)
    )
    server_class = HttpServer if kind == "conduit" else TornadoHttpServer
    server = server_class(app, limits or ServerLimits())
    sockets = bind("127.0.0.1", 0)
    if receive_buffer is not None:
        for sock in sockets:  # accepted sockets inherit it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    port = sockets[0].getsockname()[1]
    await server.start(sockets)
    try:
        yield server, port
    finally:
        await server.stop()


async def connect(
    port: int, send_buffer: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if send_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock)
