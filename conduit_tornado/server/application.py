"""Tornado's Application, with a direct path to the gateway's plain routes.

Tornado routes every request through two router layers (hosts, then the rules in order)
and a delegate per request before a handler exists. The busiest paths
(``/v1/chat/completions`` and the like) are plain strings, so a dict finds their handler;
the handler is then driven exactly as Tornado's ``_HandlerDelegate`` drives a handler that
streams its body. Any other path, and every request in debug mode, takes Tornado's own
routing. Used by the standalone server only: inside Jupyter, Jupyter's application routes.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

import tornado.web
from tornado.httputil import (
    HTTPConnection,
    HTTPHeaders,
    HTTPInputError,
    HTTPMessageDelegate,
    HTTPServerRequest,
    RequestStartLine,
    ResponseStartLine,
)

from . import tornado_private

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyz0123456789/_")


class GatewayApplication(tornado.web.Application):
    def __init__(
        self, handlers: list[tuple[str, type[tornado.web.RequestHandler]]], **settings: Any
    ) -> None:
        super().__init__(handlers, **settings)
        self.plain_routes: dict[str, type[tornado.web.RequestHandler]] = {}
        if not self.settings.get("debug"):
            for pattern, handler in handlers:
                streamed = getattr(handler, "_stream_request_body", False)
                if streamed and set(pattern) <= _PLAIN:  # no regex syntax: matches itself
                    self.plain_routes.setdefault(pattern, handler)

    def start_request(self, server_conn: object, request_conn: HTTPConnection) -> _Dispatch:
        return _Dispatch(self, server_conn, request_conn)

    def get_handler_delegate(
        self,
        request: HTTPServerRequest,
        target_class: type[tornado.web.RequestHandler],
        target_kwargs: dict[str, Any] | None = None,
        path_args: list[bytes] | None = None,
        path_kwargs: dict[str, bytes] | None = None,
    ) -> tornado_private.HandlerDelegate:
        """Tornado's routing picks a handler by path alone; a route whose handler names an
        ``upgrade_handler`` (POST /v1/responses and its WebSocket mode share a URL) has
        its WebSocket upgrades served by that one instead."""
        upgrade = getattr(target_class, "upgrade_handler", None)
        if upgrade is not None and _is_upgrade(request.method, request.headers):
            target_class = upgrade()
        return super().get_handler_delegate(
            request, target_class, target_kwargs, path_args, path_kwargs
        )


def _is_upgrade(method: str | None, headers: HTTPHeaders) -> bool:
    return method == "GET" and headers.get("Upgrade", "").lower() == "websocket"


class PlainRequest(HTTPServerRequest):
    """HTTPServerRequest with the same attributes, built for less. Tornado checks the
    Host header against its URI grammar and splits off the port with regexes, and parses
    and deep-copies the query string, on every request; here a host already seen is
    looked up, and an empty query (every inference call) parses to nothing."""

    def __init__(
        self,
        connection: HTTPConnection,
        server_connection: object,
        start_line: RequestStartLine,
        headers: HTTPHeaders,
    ) -> None:
        method, uri, version = start_line
        path, _, query = uri.partition("?")
        if query:  # uncommon on plain routes: Tornado's own parsing, errors and all
            super().__init__(
                connection=connection,
                server_connection=server_connection,
                start_line=start_line,
                headers=headers,
            )
            return
        self.method, self.uri, self.version = method, uri, version
        self.headers = headers
        self.body = b""
        context = connection.context  # type: ignore[attr-defined]
        self.remote_ip = context.remote_ip
        self.protocol = context.protocol
        host = headers.get("Host")
        if host is None:
            if version != "HTTP/1.0":
                raise HTTPInputError("Missing Host header")
            host = "127.0.0.1"
        self.host = host
        self.host_name = _host_name(host)
        self.files = {}
        self.connection = connection
        self.server_connection = server_connection
        self._start_time = time.time()
        self._finish_time = None
        self.path, self.query = path, query
        self.arguments = {}
        self.query_arguments = {}
        self.body_arguments = {}


@functools.lru_cache(maxsize=64)
def _host_name(host: str) -> str:
    """The host name of a Host header, checked by Tornado itself: a request built with it
    raises HTTPInputError if it is invalid (and exceptions are not cached)."""
    start = RequestStartLine("GET", "/", "HTTP/1.1")
    return HTTPServerRequest(start_line=start, headers=HTTPHeaders(Host=host)).host_name


class _Dispatch(HTTPMessageDelegate):
    __slots__ = ("_app", "_conn", "_fallback", "_handler", "_request", "_server_conn")

    def __init__(self, app: GatewayApplication, server_conn: object, conn: HTTPConnection) -> None:
        self._app = app
        self._server_conn = server_conn
        self._conn = conn
        self._fallback: HTTPMessageDelegate | None = None
        self._handler: tornado.web.RequestHandler | None = None
        self._request: HTTPServerRequest | None = None

    def headers_received(
        self, start_line: RequestStartLine | ResponseStartLine, headers: HTTPHeaders
    ) -> asyncio.Future[None] | None:
        assert isinstance(start_line, RequestStartLine)
        app = self._app
        handler_class = app.plain_routes.get(start_line.path.partition("?")[0])
        if handler_class is None or (
            # A WebSocket upgrade of a plain route: Tornado's routing, which hands it to
            # the route's upgrade_handler (get_handler_delegate above).
            hasattr(handler_class, "upgrade_handler") and _is_upgrade(start_line.method, headers)
        ):
            self._fallback = tornado_private.routing_delegate(app, self._server_conn, self._conn)
            return self._fallback.headers_received(start_line, headers)  # type: ignore[return-value]
        request = PlainRequest(self._conn, self._server_conn, start_line, headers)
        self._request = request
        handler = self._handler = handler_class(app, request)
        transforms = [t(request) for t in app.transforms]
        prepared = tornado_private.start_streaming_handler(handler, request, transforms)
        if getattr(handler, "body_before_prepare", False) and "Expect" not in headers:
            # The handler only buffers the body, so the server may deliver it now rather
            # than after prepare(): usually all of it is already here, and prepare() then
            # runs straight on into the method, two task switches fewer per request. A
            # client that asks "Expect: 100-continue" still hears the checks first.
            return None
        return prepared

    def data_received(self, chunk: bytes) -> Any:
        if self._fallback is not None:
            return self._fallback.data_received(chunk)
        assert self._handler is not None
        return self._handler.data_received(chunk)

    def finish(self) -> None:
        if self._fallback is not None:
            self._fallback.finish()
        elif self._request is not None:
            tornado_private.body_complete(self._request)

    def on_connection_close(self) -> None:
        if self._fallback is not None:
            self._fallback.on_connection_close()
        elif self._handler is not None:
            self._handler.on_connection_close()
