"""The JupyterHub mode's routes (conduit_tornado/hub/handlers.py), described only when they
are mounted (the application has a hub): the Hub OAuth round trip, a hub user's own key and
usage, and the spawner's call for a user's environment.

A hub user's browser holds our session cookie (``hubSession``); on unsafe methods it also
sends the session's CSRF token in X-Conduit-CSRF. Their own key works where a route admits
keys, so a notebook reads its usage with the key it was spawned with."""

from __future__ import annotations

from .common import ANY_OBJECT, STRING, Json, Op, nullable, q, ref

#: A hub user's browser session (conduit_tornado/hub/sessions.py COOKIE).
SECURITY_SCHEME: Json = {
    "type": "apiKey",
    "in": "cookie",
    "name": "conduit_hub_session",
    "description": "A JupyterHub user's session, opened by signing in through the hub "
    "(GET /hub/login). Unsafe methods also need its CSRF token in X-Conduit-CSRF.",
}
ERRORS = (400, 401, 403, 413, 500, 503)

_OWN = ("hubSession", "virtualKey")
_USER: Json = {
    "type": "object",
    "required": ["object", "user", "admin", "groups", "via", "csrf_header", "key"],
    "properties": {
        "object": {"const": "hub.user"},
        "user": nullable(STRING),
        "admin": {"type": "boolean"},
        "groups": {"type": "array", "items": STRING},
        "via": {"enum": ["hub", "key"]},
        "csrf": nullable(STRING),
        "csrf_header": STRING,
        "key": ref("Key"),
        "secret": {
            **nullable({"type": "string", "pattern": "^condt_"}),
            "description": "The key itself, only in the answer that created it.",
        },
    },
}
_USAGE: Json = {
    "type": "object",
    "required": ["object", "group_by", "key", "data", "totals"],
    "properties": {
        "object": {"const": "usage"},
        "group_by": {"enum": ["day", "model"]},
        "key": ref("Key"),
        "data": {"type": "array", "items": ANY_OBJECT},
        "totals": ANY_OBJECT,
    },
}
_ENVIRONMENT: Json = {
    "type": "object",
    "required": ["object", "user", "key", "environment"],
    "properties": {
        "object": {"const": "hub.environment"},
        "user": STRING,
        "key": ref("Key"),
        "environment": {
            "type": "object",
            "required": ["OPENAI_API_KEY"],
            "properties": {"OPENAI_API_KEY": {"type": "string", "pattern": "^condt_"}},
        },
    },
}
_SIGNED_OUT: Json = {
    "type": "object",
    "required": ["object", "signed_out"],
    "properties": {"object": {"const": "hub.session"}, "signed_out": {"const": True}},
}
_DAY = {"type": "string", "format": "date"}

PARAMS: dict[str, tuple[str, ...]] = {"handlers.EnvironmentHandler": ("name",)}

OPS: dict[str, dict[str, Op]] = {
    "handlers.HubLoginHandler": {
        "get": Op(
            "Hub mode: sign in with JupyterHub (to the hub's OAuth page; next, a page of "
            "this gateway, is where the sign-in ends).",
            None,
            status=302,
            query=(q("next", STRING),),
            also=(429,),
        )
    },
    "handlers.OAuthCallbackHandler": {
        "get": Op(
            "Hub mode: the hub's OAuth redirect; opens a session and goes on to next.",
            None,
            status=302,
            query=tuple(q(n, STRING) for n in ("code", "state", "error", "error_description")),
            also=(400, 403, 502),
        )
    },
    "handlers.HubLogoutHandler": {
        "post": Op("Hub mode: end this browser's hub session.", _SIGNED_OUT, kind="hub")
    },
    "handlers.MeHandler": {
        "get": Op(
            "Hub mode: who is calling, and their own key (created on first use).",
            _USER,
            kind="hub",
            security=_OWN,
        )
    },
    "handlers.MeRotateHandler": {
        "post": Op(
            "Hub mode: a new secret for the caller's own key; the old one stops working.",
            ref("KeyWithSecret"),
            kind="hub",
        )
    },
    "handlers.MeUsageHandler": {
        "get": Op(
            "Hub mode: spend and tokens of the caller's own key, per day or per model.",
            _USAGE,
            query=(
                q("group_by", {"enum": ["day", "model"]}),
                q("start", _DAY),
                q("end", _DAY),
            ),
            kind="hub",
            security=_OWN,
        )
    },
    "handlers.EnvironmentHandler": {
        "post": Op(
            "Hub mode: the spawner's call: the user's key with a new secret, for the "
            "environment of the user's server.",
            _ENVIRONMENT,
            kind="admin",
        )
    },
    "handlers.HubHomeHandler": {"get": Op("Hub mode: to the web UI.", None, status=302)},
}
