"""Tornado's own HTTPServer serving the same application (CONDUIT_HTTP_SERVER=tornado): a
fallback should our server misbehave somewhere, held to the same limits where Tornado
offers them (idle and head timeout, body timeout, body and head sizes, the connection cap
and proxy headers from trusted peers only), and accepting through our accept loop (accept
errors reported once a second). It has no write timeout."""

from __future__ import annotations

import logging
import socket
import ssl
from typing import Any

import tornado.httpserver
import tornado.iostream
from tornado.httputil import (
    HTTPConnection,
    HTTPHeaders,
    HTTPMessageDelegate,
    HTTPServerConnectionDelegate,
    RequestStartLine,
    ResponseStartLine,
)

from . import tornado_private
from .forwarded import TrustedProxies
from .http import MAX_HEADER_BYTES, HttpServer, overload_answer
from .limits import ServerLimits

log = logging.getLogger("conduit.http")


class _Origin(HTTPMessageDelegate):
    """Sets each request's client address and scheme from the peer, or from proxy headers
    when the peer is a trusted proxy (instead of Tornado's ``xheaders``, which believes
    any peer and prefers X-Real-Ip)."""

    def __init__(
        self, delegate: HTTPMessageDelegate, conn: HTTPConnection, trusted: TrustedProxies
    ) -> None:
        self._delegate = delegate
        self._context: Any = conn.context  # type: ignore[attr-defined]
        self._trusted = trusted

    def headers_received(
        self, start_line: RequestStartLine | ResponseStartLine, headers: HTTPHeaders
    ) -> Any:
        peer, scheme = tornado_private.connection_peer(self._context)
        client, forwarded_scheme = self._trusted.resolve(peer, headers)
        tornado_private.set_request_origin(self._context, client, forwarded_scheme or scheme)
        return self._delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Any:
        return self._delegate.data_received(chunk)

    def finish(self) -> None:
        self._delegate.finish()

    def on_connection_close(self) -> None:
        self._delegate.on_connection_close()


class _Server(tornado.httpserver.HTTPServer):
    def initialize(self, *args: Any, **kwargs: Any) -> None:
        self.trusted: TrustedProxies = kwargs.pop("trusted")
        self.cap: int = kwargs.pop("cap")
        super().initialize(*args, **kwargs)

    def handle_stream(self, stream: tornado.iostream.IOStream, address: tuple[Any, ...]) -> None:
        if tornado_private.open_connections(self) >= self.cap:
            written = stream.write(overload_answer())
            written.add_done_callback(lambda _: stream.close())
            return
        super().handle_stream(stream, address)

    def start_request(self, server_conn: object, request_conn: HTTPConnection) -> Any:
        delegate = super().start_request(server_conn, request_conn)
        if self.trusted:
            delegate = _Origin(delegate, request_conn, self.trusted)
        return delegate


class TornadoHttpServer(HttpServer):
    """HttpServer's interface (start, stop_listening, close_all_connections) on
    tornado.httpserver.HTTPServer; none of our server's connection machinery runs."""

    def __init__(
        self,
        delegate: HTTPServerConnectionDelegate,
        limits: ServerLimits | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(delegate, limits, tls)
        limits = self.limits
        self._server = _Server(
            delegate,
            xheaders=False,
            max_header_size=MAX_HEADER_BYTES,
            idle_connection_timeout=limits.keepalive_timeout,
            body_timeout=limits.body_timeout,
            max_body_size=limits.max_body_size,
            trusted=self.trusted,
            cap=limits.connection_cap(),
            ssl_options=tls,  # Tornado wraps each accepted socket (SSLIOStream)
        )
        self.cap = self._server.cap

    async def start(self, sockets: list[socket.socket]) -> None:
        # Our accept loop (accept errors reported once a second; Tornado's own logs
        # each one, as fast as the loop spins), handing each socket to Tornado.
        self.listen(sockets)

    def adopt(self, sock: socket.socket) -> None:
        try:
            address = sock.getpeername()
        except OSError:  # the client has gone already
            sock.close()
            return
        tornado_private.accept_connection(self._server, sock, address)

    async def close_all_connections(self) -> None:
        await self._server.close_all_connections()

    async def stop(self) -> None:
        self.stop_listening()
        await self.close_all_connections()
