"""Every use of Tornado's private API, in one module.

The lean server and the direct dispatch drive RequestHandlers the way Tornado's own
``_HandlerDelegate`` does, which Tornado offers no public API for. pyproject.toml pins
``tornado<6.7``, and tests/test_server_tornado_private.py pins each behaviour relied on
here, so a Tornado release that changes one fails that test rather than requests.
"""

from __future__ import annotations

import asyncio
from typing import Any

import tornado.httpserver
import tornado.web
from tornado.httputil import HTTPConnection, HTTPMessageDelegate, HTTPServerRequest
from tornado.routing import _RoutingDelegate


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


def open_connections(server: tornado.httpserver.HTTPServer) -> int:
    """How many connections a Tornado HTTPServer is serving."""
    return len(server._connections)
