"""Deny by default: every route is explicitly public, client (virtual key) or admin."""

from __future__ import annotations

import pytest
from tornado.httputil import HTTPHeaders, HTTPInputError, HTTPServerRequest, RequestStartLine

from conduit_tornado.api.base import (
    AdminHandler,
    ClientHandler,
    NotFoundHandler,
    PublicHandler,
)
from conduit_tornado.api.inference import ChatCompletionsHandler
from conduit_tornado.api.media import TranscriptionHandler
from conduit_tornado.api.realtime import RealtimeSocketHandler
from conduit_tornado.api.routes import routes
from conduit_tornado.server.application import GatewayApplication, PlainRequest
from conduit_tornado.server.http import RequestContext

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
    # The web UI's pages and its sign-in must load before a session exists.
    ui_public = ["/ui/api/login", "/ui", "/ui/(.*)"]
    # The bare address says where the API and the UI are (api/root.py).
    ui_public = ["/", *ui_public]
    assert public == ["/health/live", "/health/ready", r"/openapi\.json", "/metrics", *ui_public]


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
        for miss in {path + "/", path.upper(), path + "x"} - {path}:  # "/".upper() is "/"
            assert miss not in plain
            assert _routed(app, miss) is not handler
    assert GatewayApplication(routes(), debug=True).plain_routes == {}


class _Conn:
    context = RequestContext("10.1.2.3", "https")


@pytest.mark.parametrize(
    ("uri", "version", "host"),
    [
        ("/v1/chat/completions", "HTTP/1.1", "gw.example:5000"),
        ("/v1/chat/completions", "HTTP/1.1", "[::1]:5000"),
        ("/v1/chat/completions", "HTTP/1.0", None),
        ("/v1/models?limit=2&after=a&after=b", "HTTP/1.1", "GW"),
    ],
)
def test_plain_request_is_tornados_request(uri: str, version: str, host: str | None) -> None:
    start = RequestStartLine("POST", uri, version)
    headers = HTTPHeaders({"Host": host} if host else {})
    conn = _Conn()
    ours = vars(PlainRequest(conn, "server", start, headers))  # type: ignore[arg-type]
    theirs = vars(HTTPServerRequest(start_line=start, headers=headers, connection=conn))
    theirs["server_connection"] = "server"
    ours.pop("_start_time"), theirs.pop("_start_time")
    assert ours == theirs


@pytest.mark.parametrize("host", [None, "a b", "a,b", "x/y"])
def test_plain_request_refuses_what_tornado_refuses(host: str | None) -> None:
    start = RequestStartLine("POST", "/v1/chat/completions", "HTTP/1.1")
    headers = HTTPHeaders({"Host": host} if host else {})
    with pytest.raises(HTTPInputError):
        HTTPServerRequest(start_line=start, headers=headers)
    for _ in range(2):  # the second time is not answered from a cache
        with pytest.raises(HTTPInputError):
            PlainRequest(_Conn(), None, start, headers)  # type: ignore[arg-type]


def test_only_buffering_handlers_take_the_body_before_prepare() -> None:
    # A handler that parses its body as it arrives (uploads) needs prepare() to have run.
    assert ChatCompletionsHandler.body_before_prepare
    assert not TranscriptionHandler.body_before_prepare
