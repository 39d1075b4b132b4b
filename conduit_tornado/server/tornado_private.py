"""Every use of Tornado's private API, in one module.

The lean server and the direct dispatch drive RequestHandlers the way Tornado's own
``_HandlerDelegate`` does, which Tornado offers no public API for. pyproject.toml pins
``tornado<6.7``, and tests/test_server_tornado_private.py pins each behaviour relied on
here, so a Tornado release that changes one fails that test rather than requests.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from typing import Any

import tornado.httpserver
import tornado.web
from tornado.httputil import (
    HTTPConnection,
    HTTPHeaders,
    HTTPMessageDelegate,
    HTTPServerRequest,
    ResponseStartLine,
)
from tornado.routing import _RoutingDelegate

from .http import Exchange

#: What Application.get_handler_delegate returns (server/application.py overrides it).
HandlerDelegate = tornado.web._HandlerDelegate


def routing_delegate(
    app: tornado.web.Application, server_conn: object, request_conn: HTTPConnection
) -> HTTPMessageDelegate:
    """Tornado's own routing of one request (hosts, then rules), as its server uses it."""
    return _RoutingDelegate(app, server_conn, request_conn)


def _surface(task: asyncio.Task[None]) -> None:
    # RequestHandler._execute catches everything, so this only surfaces a bug in the
    # handler machinery itself.
    if not task.cancelled():
        task.result()


def start_streaming_handler(
    handler: tornado.web.RequestHandler,
    request: HTTPServerRequest,
    transforms: list[tornado.web.OutputTransform],
) -> asyncio.Future[None]:
    """Run a ``@stream_request_body`` handler as ``_HandlerDelegate.execute`` does: its
    ``_execute`` task awaits ``request._body_future`` before the method; the returned
    future resolves once ``prepare()`` is done (then the body may be delivered)."""
    loop = asyncio.get_running_loop()
    request._body_future = loop.create_future()
    prepared: asyncio.Future[None] = loop.create_future()
    handler._prepared_future = prepared  # type: ignore[assignment]  # typed None in Tornado
    loop.create_task(handler._execute(transforms)).add_done_callback(_surface)
    return prepared


def body_complete(request: HTTPServerRequest) -> None:
    """The whole body has been delivered to the handler started above."""
    if not request._body_future.done():
        request._body_future.set_result(None)


def set_request_origin(context: Any, remote_ip: str, protocol: str) -> None:
    """The client address and scheme Tornado's HTTPServer gives a request, set on its
    per-connection ``_HTTPRequestContext`` (what its own ``xheaders`` does)."""
    context.remote_ip = remote_ip
    context.protocol = protocol


def connection_peer(context: Any) -> tuple[str, str]:
    """(peer address, scheme of the socket) of a Tornado HTTPServer connection, as
    ``_HTTPRequestContext`` recorded them before any proxy header."""
    return str(context._orig_remote_ip), str(context._orig_protocol)


def accept_connection(
    server: tornado.httpserver.HTTPServer, sock: socket.socket, address: Any
) -> None:
    """Hand a socket accepted elsewhere to a Tornado server (TCPServer's own accept
    handler calls this)."""
    server._handle_connection(sock, address)


def open_connections(server: tornado.httpserver.HTTPServer) -> int:
    """How many connections a Tornado HTTPServer is serving."""
    return len(server._connections)


# A RequestHandler's response state, for api/base.py's lean __init__, clear, finish and
# flush (Tornado's own, minus the template namespace, ETags and the per-request Date
# formatting). Each reads or sets exactly what Tornado's version does.


def lean_init(
    handler: tornado.web.RequestHandler,
    application: tornado.web.Application,
    request: HTTPServerRequest,
) -> None:
    """RequestHandler.__init__'s state but the template namespace (``ui``); the caller
    goes on as Tornado's does: clear(), the close callback, initialize()."""
    handler.application = application
    handler.request = request
    handler._headers_written = False
    handler._finished = False
    handler._auto_finish = True
    handler._prepared_future = None
    handler._transforms = []


def reset_response(handler: tornado.web.RequestHandler, headers: HTTPHeaders) -> None:
    """RequestHandler.clear()'s state, with ``headers`` as the response's headers."""
    handler._headers = headers
    handler._write_buffer = []
    handler._status_code = 200
    handler._reason = "OK"


def lean_finish(
    handler: tornado.web.RequestHandler, chunk: str | bytes | dict[str, Any] | None
) -> asyncio.Future[None] | None:
    """RequestHandler.finish for a plain answer: Content-Length from the buffered body,
    no ETag. None (nothing done) where Tornado's own finish must run: a status without a
    body, or a handler already finished (Tornado raises the error)."""
    code = handler._status_code
    if code in (204, 304) or code < 200 or handler._finished:
        return None
    if chunk is not None:
        handler.write(chunk)
    if not handler._headers_written and "Content-Length" not in handler._headers:
        handler._headers["Content-Length"] = str(sum(map(len, handler._write_buffer)))
    connection = handler.request.connection
    assert connection is not None
    connection.set_close_callback(None)  # type: ignore[attr-defined]
    future = handler.flush(include_footers=True)
    connection.finish()
    handler.application.log_request(handler)
    handler._finished = True
    handler.on_finish()
    return future


def lean_flush(
    handler: tornado.web.RequestHandler, more: Mapping[str, str]
) -> asyncio.Future[None] | None:
    """RequestHandler.flush on our server (``more``: headers kept outside HTTPHeaders,
    see Exchange.write_headers). None (nothing done) where Tornado's own flush must run:
    output transforms, HEAD, a cookie set, or another server's connection."""
    connection = handler.request.connection
    if (
        handler._transforms
        or handler.request.method == "HEAD"
        or hasattr(handler, "_new_cookie")
        or not isinstance(connection, Exchange)
    ):
        return None
    buffered = handler._write_buffer
    chunk = buffered[0] if len(buffered) == 1 else b"".join(buffered)
    handler._write_buffer = []
    if handler._headers_written:
        return connection.write(chunk)
    handler._headers_written = True
    start_line = ResponseStartLine("", handler._status_code, handler._reason)
    return connection.write_headers(start_line, handler._headers, chunk, more)
