"""Pins each behaviour of Tornado's private API that conduit_tornado/server/tornado_private.py
relies on (pyproject.toml allows tornado<6.7): a Tornado release that changes one fails
here, by name, rather than in requests."""

from __future__ import annotations

import json
from typing import Any

import pytest
import tornado.web
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

from conduit_tornado.server import tornado_private
from conduit_tornado.server.application import GatewayApplication
from conduit_tornado.server.http import RequestContext
from conduit_tornado.server.tornado_server import TornadoHttpServer
from tests.wire import KINDS, connect, read_response, serve

pytestmark = pytest.mark.asyncio


class _Connection:
    """Just enough of tornado.httputil.HTTPConnection to build a handler."""

    context = RequestContext("127.0.0.1", "http")

    def set_close_callback(self, callback: Any) -> None:
        self.callback = callback


async def test_handler_state_is_what_tornado_init_and_clear_set() -> None:
    app = tornado.web.Application()
    start = RequestStartLine("GET", "/", "HTTP/1.1")
    request = HTTPServerRequest(
        start_line=start,
        headers=HTTPHeaders(Host="x"),
        connection=_Connection(),  # type: ignore[arg-type]
    )
    tornados = set(vars(tornado.web.RequestHandler(app, request)))

    lean = object.__new__(tornado.web.RequestHandler)
    tornado_private.lean_init(lean, app, request)
    tornado_private.reset_response(lean, HTTPHeaders())
    # ``ui`` is the template namespace the lean path leaves out; ``_transforms`` Tornado
    # sets in _execute, before any of the handler's code runs.
    assert tornados - {"ui"} == set(vars(lean)) - {"_transforms"}


@tornado.web.stream_request_body
class Streamed(tornado.web.RequestHandler):
    order: list[str]

    def prepare(self) -> None:
        self.order.append("prepare")
        self.body = b""

    def data_received(self, chunk: bytes) -> None:
        self.order.append("data")
        self.body += chunk

    def post(self) -> None:
        self.order.append("post")
        self.finish({"body": self.body.decode(), "transforms": len(self._transforms)})


class Routed(tornado.web.RequestHandler):
    def get(self, name: str) -> None:
        self.finish({"name": name})


async def test_a_streaming_handler_and_a_routed_one_driven_as_tornado_does() -> None:
    """start_streaming_handler (``_execute``, ``_prepared_future``, ``_body_future``) on
    the plain route; routing_delegate (``_RoutingDelegate``) for the pattern."""
    Streamed.order = []
    app = GatewayApplication([("/streamed", Streamed), (r"/routed/(\w+)", Routed)])
    assert "/streamed" in app.plain_routes
    async with serve("conduit", app) as (_, port):
        reader, writer = await connect(port)
        writer.write(b"POST /streamed HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        status, _, body = await read_response(reader)
        assert status == 200 and json.loads(body) == {"body": "hi", "transforms": 0}
        assert Streamed.order == ["prepare", "data", "post"]
        writer.write(b"GET /routed/abc HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = await read_response(reader)
        assert status == 200 and json.loads(body) == {"name": "abc"}
        writer.close()


class Lean(tornado.web.RequestHandler):
    """What api/base.py does with tornado_private's response functions."""

    def __init__(
        self, application: tornado.web.Application, request: HTTPServerRequest, **kwargs: Any
    ) -> None:
        tornado_private.lean_init(self, application, request)
        self.clear()
        request.connection.set_close_callback(self.on_connection_close)  # type: ignore[union-attr]
        self.initialize(**kwargs)

    def clear(self) -> None:
        tornado_private.reset_response(self, HTTPHeaders({"Content-Type": "application/json"}))

    def finish(self, chunk: Any = None) -> Any:
        done = tornado_private.lean_finish(self, chunk)
        return super().finish(chunk) if done is None else done

    def flush(self, include_footers: bool = False) -> Any:
        done = tornado_private.lean_flush(self, {"x-own": "1"})
        return super().flush(include_footers) if done is None else done

    def get(self) -> None:
        self.write(b'{"a":')
        self.finish(b"1}")

    def head(self) -> None:
        self.finish()


@pytest.mark.parametrize("kind", KINDS)
async def test_the_lean_response_path(kind: str) -> None:
    async with serve(kind, [(r"/", Lean)]) as (_, port):
        reader, writer = await connect(port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = await read_response(reader)
        assert (status, body) == (200, b'{"a":1}')
        assert headers["content-length"] == "7"
        # Our server takes the lean path (with the headers kept outside HTTPHeaders);
        # Tornado's server takes Tornado's own flush.
        assert ("x-own" in headers) == (kind == "conduit")
        writer.write(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")  # Tornado's own code for HEAD
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        writer.close()


async def test_tornado_server_connection_context() -> None:
    """connection_peer / set_request_origin (``_HTTPRequestContext``) and
    open_connections (``HTTPServer._connections``)."""
    seen: list[Any] = []
    servers: list[TornadoHttpServer] = []

    class Peer(tornado.web.RequestHandler):
        def get(self) -> None:
            context = self.request.connection.context  # type: ignore[union-attr]
            seen.append(tornado_private.connection_peer(context))
            tornado_private.set_request_origin(context, "192.0.2.1", "https")
            seen.append((context.remote_ip, context.protocol))
            seen.append(tornado_private.open_connections(servers[0]._server))
            self.finish("ok")

    async with serve("tornado", [(r"/", Peer)]) as (server, port):
        assert isinstance(server, TornadoHttpServer)
        servers.append(server)
        reader, writer = await connect(port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(reader))[2] == b"ok"
        writer.close()
    assert seen == [("127.0.0.1", "http"), ("192.0.2.1", "https"), 1]
