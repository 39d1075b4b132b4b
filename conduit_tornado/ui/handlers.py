"""The web UI's server side: its static files, sign-in and sign-out, and two read-only
views the admin API lacks (the session, and health at a glance).

Everything else the pages show comes from the admin API (/admin/v1/...), which admits a
signed-in browser through ``UiSessions.admits`` (see ``AdminHandler.authenticate``). The
same handlers serve the standalone gateway at /ui/ and Jupyter at {base_url}conduit/ui/:
paths are derived from the request, never configured.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import mimetypes
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conduit_tornado.api.base import AdminHandler, PublicHandler, bearer_token
from conduit_tornado.core.errors import ApiError
from conduit_tornado.routing.upstream import ProviderError, Timeouts

from .sessions import COOKIE, CSRF_HEADER, UiSessions

STATIC = Path(__file__).resolve().parent / "static"
_MAX_LOGIN_BYTES = 4096
# Every asset is ours and local: nothing may load from elsewhere, and no page may frame us.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def _load_assets() -> dict[str, Asset]:
    """The UI's files, read once: a fixed set, so no request can name a path outside it."""
    assets = {}
    for path in sorted(STATIC.rglob("*")):
        if not path.is_file():
            continue
        body = path.read_bytes()
        kind = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
        assets[path.relative_to(STATIC).as_posix()] = Asset(
            body,
            kind or "application/octet-stream",
            '"' + hashlib.sha256(body).hexdigest()[:32] + '"',
        )
    return assets


ASSETS = _load_assets()


def ui_sessions(handler: Any) -> UiSessions:
    sessions: UiSessions = handler.settings["conduit_ui"]
    return sessions


def mount_path(handler: Any, tail: str) -> str:
    """The prefix the gateway is mounted at ('/' or '/user/ana/conduit/'), from the path
    of a request whose route ends with ``tail``."""
    path: str = handler.request.path
    return path[: len(path) - len(tail)] if path.endswith(tail) else "/"


class UiPageHandler(PublicHandler):
    """GET /ui/ and its assets. Public: the sign-in page must load before a session."""

    async def get(self, name: str | None = None) -> None:
        name = name or "index.html"  # the bare /ui/
        asset = ASSETS.get(name)
        if asset is None:
            raise ApiError(
                404, f"Unknown request URL: GET {self.request.path}.", code="unknown_url"
            )
        if name == "index.html" and self.settings.get("xsrf_cookies"):
            self.xsrf_token  # noqa: B018  (inside Jupyter: sets the _xsrf cookie the page echoes)
        self.set_header("Content-Type", asset.content_type)
        self.set_header("Content-Security-Policy", _CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("X-Frame-Options", "DENY")
        # Revalidated each time (cheap: the ETag), so an upgraded gateway serves new files.
        self.set_header("Cache-Control", "no-cache")
        self.set_header("ETag", asset.etag)
        if self.request.headers.get("If-None-Match") == asset.etag:
            self.set_status(304)
            self.finish()
            return
        self.finish(asset.body)


class UiRedirectHandler(PublicHandler):
    """/ui without the slash: relative asset paths need it."""

    def get(self) -> None:
        self.redirect(self.request.path + "/")


class LoginHandler(PublicHandler):
    """POST /ui/api/login {"key": master key}: opens a session and sets its cookie.

    Only the master key signs in; a virtual key is refused like any wrong key. Failed
    attempts from one address are slowed down (429 with Retry-After while locked out)."""

    max_body_setting = "max_admin_request_bytes"

    async def post(self) -> None:
        sessions = ui_sessions(self)
        address = self.request.remote_ip or ""
        wait = math.ceil(sessions.throttle.wait(address))
        if wait > 0:
            raise ApiError(
                429,
                f"Too many failed sign-ins from this address. Try again in {wait} s.",
                code="login_throttled",
                headers={"Retry-After": str(wait)},
            )
        if self._received > _MAX_LOGIN_BYTES:
            raise ApiError(413, "Request body too large.", code="request_too_large")
        key = self.json_body().get("key")
        if not isinstance(key, str) or not key.strip():
            raise ApiError(400, "Enter the master key.", param="key", code="missing_key")
        if not self.ctx.is_master_key(key.strip()):
            sessions.throttle.failed(address)
            await asyncio.sleep(0.25)  # a little friction for every wrong guess, no loop block
            raise ApiError(
                401,
                "That is not the master key. Virtual keys cannot sign in to the web UI.",
                param="key",
                code="invalid_master_key",
            )
        sessions.throttle.succeeded(address)
        session_id, session = await sessions.open(self.request.headers.get("User-Agent", ""))
        self.set_cookie(
            COOKIE,
            session_id,
            path=mount_path(self, "ui/api/login"),
            expires=session.expires_at,
            httponly=True,
            secure=self.request.protocol == "https",
            samesite="Strict",
        )
        self.set_header("Cache-Control", "no-store")
        self.send_json(
            {"object": "ui.session", "csrf": session.csrf, "expires_at": session.expires_at}
        )


class LogoutHandler(AdminHandler):
    """POST /ui/api/logout: ends this browser's session (the store forgets it)."""

    async def post(self) -> None:
        sessions = ui_sessions(self)
        session = await sessions.of_request(self)
        if session is not None:
            await sessions.close(session)
        self.clear_cookie(COOKIE, path=mount_path(self, "ui/api/logout"))
        self.send_json({"object": "ui.session", "signed_out": session is not None})


class SessionHandler(AdminHandler):
    """GET /ui/api/session: who this browser is signed in as, and the CSRF token the page
    must send on state-changing calls (readable by our own page only).

    A browser that is not signed in (no cookie, or an ended session) is answered too, with
    ``"via": null``: the page asks this on every load, and a 401 there would be a failed
    request in the console of everyone who opens the sign-in page. ``hub`` says whether the
    gateway is a JupyterHub service, so that the page asks the hub only then. Credentials
    that are given and wrong (a bearer token that is not the master key) still get 401."""

    signed_in = False

    async def authenticate(self) -> None:
        try:
            await super().authenticate()
        except ApiError as exc:
            if exc.status != 401 or bearer_token(self) is not None:
                raise
            return
        self.signed_in = True

    async def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        hub = self.settings.get("conduit_hub") is not None
        if not self.signed_in:
            self.send_json(
                {
                    "object": "ui.session",
                    "via": None,
                    "csrf": None,
                    "csrf_header": CSRF_HEADER,
                    "expires_at": None,
                    "hub": hub,
                }
            )
            return
        session = await ui_sessions(self).of_request(self)
        self.send_json(
            {
                "object": "ui.session",
                "via": "session" if session else "host",
                "csrf": session.csrf if session else None,
                "csrf_header": CSRF_HEADER,
                "expires_at": session.expires_at if session else None,
                "store": self.ctx.store.kind,
                "hub": hub,
            }
        )


class HealthHandler(AdminHandler):
    """GET /ui/api/health: the store, each deployment's state in the router (cooldowns,
    recent failures, latency) and the request-log queue, for the Health page."""

    async def get(self) -> None:
        ctx = self.ctx
        started = time.perf_counter()
        try:
            await asyncio.wait_for(ctx.store.ping(), timeout=2.0)
            store = {"kind": ctx.store.kind, "ok": True, "error": None}
        except Exception as exc:
            store = {"kind": ctx.store.kind, "ok": False, "error": type(exc).__name__}
        store["ping_ms"] = round(1000 * (time.perf_counter() - started), 1)
        now = time.monotonic()
        deployments = []
        for route in ctx.catalog.models.values():
            for dep in route.deployments:
                provider = ctx.catalog.providers.get(dep["provider"])
                health = ctx.router.health(dep["provider"], dep["model"])
                deployments.append(
                    {
                        "model": route.name,
                        "provider": dep["provider"],
                        "provider_type": provider.type if provider else None,
                        "provider_enabled": bool(provider and provider.enabled),
                        "credential_error": provider.credential_error if provider else None,
                        "upstream_model": dep["model"],
                        "cooldown_seconds": max(0.0, round(health.cooled_until - now, 1)),
                        "failures": health.failures,
                        "in_flight": health.in_flight,
                        "latency_ms": health.ewma_ms,
                        # The last active check (routing/health.py); None: not checked.
                        "healthy": health.healthy,
                        "checked_at": health.checked_at,
                        "check_error": health.check_error,
                    }
                )
        self.send_json(
            {
                "object": "ui.health",
                "store": store,
                "deployments": deployments,
                "providers": len(ctx.catalog.providers),
                "models": len(ctx.catalog.models),
                "in_flight_requests": max(0, ctx.in_flight.requests - 1),  # not this one
                "logs_pending": ctx.recorder.pending,
                "logs_dropped": ctx.recorder.dropped,
            }
        )


class ProviderTestHandler(AdminHandler):
    """POST /ui/api/providers/{name}/test {"model": optional}: one chat completion of at
    most one token, sent straight to the provider (no retries, no fallbacks, not billed to
    a key), to check its URL and credentials. The model defaults to the first deployment
    mapped onto the provider."""

    async def post(self, name: str) -> None:
        provider = self.ctx.catalog.providers.get(name)
        if provider is None:
            raise ApiError(404, f"No provider named {name!r}.", code="provider_not_found")
        body = self.json_body() if self.body.strip() else {}
        model = body.get("model")
        if model is None:
            model = next(
                (
                    d["model"]
                    for route in self.ctx.catalog.models.values()
                    for d in route.deployments
                    if d["provider"] == name
                ),
                None,
            )
        if not isinstance(model, str) or not model.strip():
            raise ApiError(
                400,
                "Enter a model this provider serves, such as gpt-4o-mini: no model mapping "
                "uses this provider yet.",
                param="model",
            )
        limits = self.ctx.settings
        timeouts = Timeouts(connect=min(limits.connect_timeout, 10.0), first_byte=None, total=20.0)
        request = {
            "model": model,
            "messages": [{"role": "user", "content": "Reply with one word: ok"}],
            "max_tokens": 1,
        }
        started = time.perf_counter()
        adapter = self.ctx.router.adapter(provider)
        try:
            await adapter.chat(request, model, timeouts)
        except ProviderError as exc:
            # What a client would be told, which names the fix (a wrong base_url or model),
            # unless the provider refused the request itself: then its own words.
            error = exc.to_api_error(provider.name, model, adapter.base_url_hint)
            self.send_json(
                {
                    "object": "ui.provider_test",
                    "ok": False,
                    "model": model,
                    "kind": exc.kind,
                    "status": exc.status or None,
                    "code": error.code,
                    "message": exc.message if exc.kind == "client" else error.message,
                }
            )
            return
        self.send_json(
            {
                "object": "ui.provider_test",
                "ok": True,
                "model": model,
                "latency_ms": round(1000 * (time.perf_counter() - started), 1),
            }
        )


def ui_routes(p: str) -> list[tuple[str, type[Any]]]:
    """The UI's routes under the mount prefix ``p`` (no trailing slash)."""
    return [
        (p + r"/ui/api/login", LoginHandler),
        (p + r"/ui/api/logout", LogoutHandler),
        (p + r"/ui/api/session", SessionHandler),
        (p + r"/ui/api/health", HealthHandler),
        (p + r"/ui/api/providers/([^/]+)/test", ProviderTestHandler),
        (p + r"/ui", UiRedirectHandler),
        # Any name (empty: the page), but only the files in ASSETS are ever answered: no
        # path reaches the disk.
        (p + r"/ui/(.*)", UiPageHandler),
    ]
