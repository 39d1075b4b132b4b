"""Deny by default: every route is explicitly public, client (virtual key) or admin."""

from __future__ import annotations

from conduit_tornado.app import routes
from conduit_tornado.handlers.base import AdminHandler, ClientHandler, PublicHandler
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
