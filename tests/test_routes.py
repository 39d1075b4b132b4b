"""Deny by default: every route is explicitly public, client (virtual key) or admin."""

from __future__ import annotations

from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

from conduit_tornado.app import routes
from conduit_tornado.dispatch import GatewayApplication
from conduit_tornado.handlers.base import (
    AdminHandler,
    ClientHandler,
    NotFoundHandler,
    PublicHandler,
)
from conduit_tornado.handlers.realtime import RealtimeSocketHandler

# WebSocket routes cannot share BaseHandler's streamed bodies; this one authenticates
# virtual keys and session secrets itself (tests/test_realtime.py covers its refusals).
CLIENT = ClientHandler | RealtimeSocketHandler


def test_every_route_chooses_an_auth_kind() -> None:
    public = []
    for pattern, handler in routes():
        assert issubclass(handler, PublicHandler | CLIENT | AdminHandler), pattern
        if pattern.startswith("/admin/"):
            assert issubclass(handler, AdminHandler), pattern
        elif pattern.startswith("/v1/"):
            assert issubclass(handler, CLIENT), pattern
        if issubclass(handler, PublicHandler):
            public.append(pattern)
    assert public == ["/health/live", "/health/ready"]


def test_routes_mount_under_a_prefix() -> None:
    mounted = routes("/user/ana/conduit/")
    assert all(p.startswith("/user/ana/conduit/") for p, _ in mounted)
    assert [h for _, h in mounted] == [h for _, h in routes()]


def _routed(app: GatewayApplication, path: str) -> object:
    """The handler class Tornado's own routing picks for ``path``."""
    start = RequestStartLine("POST", path, "HTTP/1.1")
    request = HTTPServerRequest(start_line=start, headers=HTTPHeaders({"Host": "h"}))
    return app.find_handler(request).handler_class


def test_direct_dispatch_agrees_with_tornado_routing() -> None:
    app = GatewayApplication(routes(), default_handler_class=NotFoundHandler)
    plain = app.plain_routes
    assert {"/v1/chat/completions", "/v1/completions", "/v1/embeddings"} <= set(plain)
    assert not any("(" in p for p in plain)  # patterns with groups keep Tornado's routing
    for path, handler in plain.items():
        assert _routed(app, path + "?q=1") is handler
        # Near misses are not in the dict, so they reach Tornado's routing as before.
        for miss in (path + "/", path.upper(), path + "x"):
            assert miss not in plain
            assert _routed(app, miss) is not handler
    assert GatewayApplication(routes(), debug=True).plain_routes == {}
