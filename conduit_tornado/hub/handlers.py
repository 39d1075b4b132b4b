"""The hub's routes, mounted under the gateway's prefix only in hub mode.

    GET  {p}/hub/login?next=...            public: to the hub's OAuth authorize page
    GET  {p}/oauth_callback                public: the OAuth redirect; opens a session
    POST {p}/hub/logout                    hub session: ends it
    GET  {p}/hub/api/me                    hub session or virtual key: who, and the own key
    POST {p}/hub/api/me/rotate             hub session: a new secret for the own key
    GET  {p}/hub/api/me/usage              hub session or virtual key: the own key's usage
    POST {p}/hub/api/users/{name}/environment   admin: the spawner's call (see conduit_jupyter.hub)
    GET  {p}/ and {p}                      public: to the web UI

A hub user who is not a hub admin reaches nothing else: the admin API admits hub admins
only (``Hub.admits_admin``), and the /v1 routes want the virtual key.
"""

from __future__ import annotations

from typing import Any

from jupyterhub.utils import get_browser_protocol
from tornado.httputil import url_concat

from conduit_tornado.admission.keys import VirtualKey, key_view
from conduit_tornado.api.admin_usage import days_between
from conduit_tornado.api.base import (
    AdminHandler,
    BaseHandler,
    PublicHandler,
    bearer_token,
)
from conduit_tornado.core.errors import ApiError, invalid_api_key
from conduit_tornado.core.money import usage_numbers
from conduit_tornado.metering.recorder import USAGE

from .identity import Hub, HubUser
from .sessions import COOKIE, CSRF_HEADER

_USAGE_FIELDS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost",
    "unpriced_requests",
)
_MAX_NEXT = 2048
# Sign-ins begun and not finished: HubOAuth keeps each one's state in memory for ten minutes,
# so a flood of /hub/login is held to this many (about 2 MB) rather than growing without end.
MAX_PENDING_SIGN_INS = 10_000


def hub_of(handler: Any) -> Hub:
    hub: Hub = handler.settings["conduit_hub"]
    return hub


def _login_required(hub: Hub) -> ApiError:
    return ApiError(
        401,
        "Sign in with JupyterHub to see your key.",
        code="hub_login_required",
        headers={"X-Conduit-Hub-Login": hub.prefix + "/hub/login"},
    )


class HubLoginHandler(PublicHandler):
    """Starts Hub OAuth (with PKCE); ``next`` must be a page of this gateway."""

    def get(self) -> None:
        hub = hub_of(self)
        auth = hub.auth
        next_url = self.get_query_argument("next", "") or hub.prefix + "/ui/"
        if (
            len(next_url) > _MAX_NEXT
            or not next_url.startswith(hub.prefix + "/")
            or next_url.startswith("//")
            or "\\" in next_url
        ):
            next_url = hub.prefix + "/ui/"  # never a redirect elsewhere (no open redirect)
        pending = auth._oauth_states  # HubOAuth's own store of states (an _ExpiringDict)
        if len(pending) >= MAX_PENDING_SIGN_INS:
            pending.purge_expired()
            if len(pending) >= MAX_PENDING_SIGN_INS:
                raise ApiError(
                    429,
                    "Too many sign-ins are under way. Try again in a minute.",
                    code="login_throttled",
                    headers={"Retry-After": "60"},
                )
        verifier, challenge, method = auth.generate_pkce_code_challenge()
        state = auth.set_state_cookie(self, next_url=next_url, code_verifier=verifier)
        params = {"state": state, "code_challenge": challenge, "code_challenge_method": method}
        self.redirect(url_concat(auth.login_url, params))


class OAuthCallbackHandler(PublicHandler):
    """The hub sends the browser back here with a code: exchanged for the user's token,
    the user checked with the hub, a session opened."""

    async def get(self) -> None:
        hub = hub_of(self)
        auth = hub.auth
        error = self.get_query_argument("error", None)
        if error:
            description = self.get_query_argument("error_description", error)[:200]
            raise ApiError(400, f"JupyterHub refused the sign-in: {description}", code="oauth")
        code = self.get_query_argument("code", None)
        state = self.get_query_argument("state", None)
        if not code or not state:
            raise ApiError(400, "The OAuth callback needs code and state.", code="oauth")
        cookie = self.get_secure_cookie(auth.get_state_cookie_name(state), max_age_days=1)
        auth.clear_oauth_state_cookies(self)
        if cookie is None or cookie.decode("ascii", "replace") != state:
            raise ApiError(
                403, "The sign-in expired or came from elsewhere. Sign in again.", code="oauth"
            )
        next_url = auth.get_next_url(state)
        verifier = auth.get_code_verifier(state)
        auth.clear_oauth_state(state)
        try:
            token = await auth.token_for_code(code, sync=False, code_verifier=verifier)
            model = await auth.user_for_token(token, use_cache=False, sync=False)
        except Exception as exc:  # the hub's refusal or an unreachable hub: not our crash
            raise ApiError(502, "JupyterHub did not confirm the sign-in.", code="oauth") from exc
        if model is None or model.get("kind", "user") != "user":
            raise ApiError(403, "JupyterHub did not name a user.", code="oauth")
        if auth.access_scopes and not auth.check_scopes(auth.access_scopes, model):
            raise ApiError(403, "Your hub account may not use this service.", code="forbidden")
        user = await hub.checked_user(str(model["name"]), fresh=True)
        if user is None:
            raise ApiError(403, "JupyterHub does not know this user.", code="forbidden")
        session_id, session = await hub.sessions.open(user.name, token)
        self.set_cookie(
            COOKIE,
            session_id,
            path=hub.prefix + "/",
            expires=session.expires_at,
            httponly=True,
            # Behind the hub's proxy, which terminates TLS: its X-Forwarded-Proto, as HubOAuth
            # reads it for the state cookie (a forged one could only add Secure).
            secure=get_browser_protocol(self.request) == "https",
            samesite="Lax",  # set at the end of a redirect chain through the hub
        )
        self.redirect(next_url)


class HubHomeHandler(PublicHandler):
    """The hub's Services menu links to the service's prefix: the web UI is there."""

    def get(self) -> None:
        self.redirect(hub_of(self).prefix + "/ui/")


class HubSessionHandler(BaseHandler):
    """Routes for a signed-in hub user (session cookie, CSRF token on unsafe methods) or,
    where ``admits_keys``, a virtual key standing for itself."""

    max_body_setting = "max_admin_request_bytes"
    admits_keys = False
    hub_user: HubUser | None = None
    key: VirtualKey | None = None

    async def authenticate(self) -> None:
        hub = hub_of(self)
        token = bearer_token(self)
        if token is not None:
            if not self.admits_keys:
                raise invalid_api_key("Sign in with JupyterHub for this route.")
            self.key = await self.ctx.keys.authenticate(token)
            return
        self.hub_user = await hub.request_user(self)
        if self.hub_user is None:
            raise _login_required(hub)

    async def own_key(self) -> tuple[dict[str, Any], str | None]:
        """The caller's key (the hub user's, created on first use) and, only when it was
        created by this call, its secret."""
        if self.key is not None:
            return self.key.doc, None
        assert self.hub_user is not None
        return await hub_of(self).key_for(self.hub_user)


class MeHandler(HubSessionHandler):
    admits_keys = True

    async def get(self) -> None:
        doc, secret = await self.own_key()
        session = None
        if self.hub_user is not None:
            found = await hub_of(self).sessions.of_request(self)
            session = found[0] if found else None
        user = self.hub_user
        self.set_header("Cache-Control", "no-store")
        self.send_json(
            {
                "object": "hub.user",
                "user": user.name if user else (doc.get("metadata") or {}).get("hub_user"),
                "admin": bool(user and user.admin),
                "groups": list(user.groups) if user else [],
                "via": "hub" if user else "key",
                "csrf": session.csrf if session else None,
                "csrf_header": CSRF_HEADER,
                "key": key_view(await self.ctx.keys.get(doc["_id"])),
                # Only on the call that created the key: shown once, like any new key.
                "secret": secret,
            }
        )


class MeRotateHandler(HubSessionHandler):
    async def post(self) -> None:
        assert self.hub_user is not None
        doc, secret = await hub_of(self).rotate(self.hub_user)
        self.set_header("Cache-Control", "no-store")
        self.send_json({**key_view(doc), "key": secret})


class MeUsageHandler(HubSessionHandler):
    """Spend and tokens of the caller's own key per day (or per model), as the admin
    API's /usage answers for one key."""

    admits_keys = True

    async def get(self) -> None:
        group = self.get_query_argument("group_by", "day")
        if group not in ("day", "model"):
            raise ApiError(400, "group_by must be day or model.", param="group_by")
        days = days_between(self)
        doc, _ = await self.own_key()
        where: dict[str, Any] = {"key_id": doc["_id"], **days}
        await self.ctx.recorder.flush()  # so a caller sees its own requests at once
        await self.ctx.limiter.flush()  # and its own spend (charges are written behind)
        sums = await self.ctx.store.sum_by(USAGE, where, group, _USAGE_FIELDS)
        ordered = sorted(sums.items(), key=lambda kv: str(kv[0]))
        rows = [usage_numbers({group: k, **v}, _USAGE_FIELDS) for k, v in ordered]
        totals = usage_numbers(
            {f: sum(row[f] for row in rows) for f in _USAGE_FIELDS}, _USAGE_FIELDS
        )
        self.send_json(
            {
                "object": "usage",
                "group_by": group,
                "key": key_view(await self.ctx.keys.get(doc["_id"])),
                "data": rows,
                "totals": totals,
            }
        )


class EnvironmentHandler(AdminHandler):
    """POST: provision the user's key if needed and give it a new secret, for the
    environment of the user's server (conduit_jupyter.hub's pre-spawn hook). The secret
    exists only in that answer: each spawn rotates it, so a secret left behind by an old
    server stops working when the user starts a new one."""

    async def post(self, name: str) -> None:
        hub = hub_of(self)
        user = await hub.checked_user(name, fresh=True)
        if user is None:
            raise ApiError(404, f"JupyterHub has no user {name!r}.", code="hub_user_not_found")
        doc, secret = await hub.rotate(user)
        self.set_header("Cache-Control", "no-store")
        self.send_json(
            {
                "object": "hub.environment",
                "user": user.name,
                "key": key_view(doc),
                "environment": {"OPENAI_API_KEY": secret},
            }
        )


class HubLogoutHandler(HubSessionHandler):
    async def post(self) -> None:
        hub = hub_of(self)
        found = await hub.sessions.of_request(self)
        if found is not None:
            await hub.sessions.close(found[0])
        self.clear_cookie(COOKIE, path=hub.prefix + "/")
        self.send_json({"object": "hub.session", "signed_out": True})


def hub_routes(p: str) -> list[tuple[str, type[Any]]]:
    """The hub's routes under the mount prefix ``p`` (no trailing slash)."""
    return [
        (p + r"/hub/login", HubLoginHandler),
        (p + r"/oauth_callback", OAuthCallbackHandler),
        (p + r"/hub/logout", HubLogoutHandler),
        (p + r"/hub/api/me", MeHandler),
        (p + r"/hub/api/me/rotate", MeRotateHandler),
        (p + r"/hub/api/me/usage", MeUsageHandler),
        (p + r"/hub/api/users/([^/]+)/environment", EnvironmentHandler),
        (p + r"/?", HubHomeHandler),
    ]
