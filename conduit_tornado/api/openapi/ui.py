"""The web UI's routes (conduit_tornado/ui/): its sign-in, its session, its own small API
and its page and assets. Past sign-in its API is the admin kind: only the master key opens
a UI session."""

from __future__ import annotations

from .common import ANY_OBJECT, Op

_UI_FILES = {
    t: {"type": "string"}
    for t in (
        "text/html; charset=utf-8",
        "text/css; charset=utf-8",
        "text/javascript; charset=utf-8",
        "image/svg+xml",
    )
}

PARAMS: dict[str, tuple[str, ...]] = {
    "handlers.UiPageHandler": ("file",),
    "handlers.ProviderTestHandler": ("provider",),
}

OPS: dict[str, dict[str, Op]] = {
    "handlers.LoginHandler": {
        "post": Op("Web UI: sign in with the master key.", ANY_OBJECT, also=(400, 401, 413, 429))
    },
    "handlers.LogoutHandler": {"post": Op("Web UI: sign out.", ANY_OBJECT)},
    "handlers.SessionHandler": {
        "get": Op(
            "Web UI: this browser's session (open: `via` is null when not signed in; `hub` "
            "says whether the gateway runs as a JupyterHub service). A bearer token other "
            "than the master key is refused.",
            ANY_OBJECT,
        )
    },
    "handlers.HealthHandler": {"get": Op("Web UI: the gateway at a glance.", ANY_OBJECT)},
    "handlers.ProviderTestHandler": {
        "post": Op("Web UI: one cheap call to a provider.", ANY_OBJECT)
    },
    "handlers.UiRedirectHandler": {"get": Op("Web UI: to /ui/.", None, status=302)},
    "handlers.UiPageHandler": {
        "get": Op("Web UI: its page and assets.", None, other_types=_UI_FILES, also=(404,))
    },
}
