"""JupyterHub as the identity layer: who a request is, by Hub OAuth, and each hub user's
own virtual key.

The gateway runs as a hub service. JupyterHub gives the service's process its API token,
OAuth client id and URLs in ``JUPYTERHUB_*`` variables, which ``jupyterhub.services.auth.
HubOAuth`` reads; this module uses HubOAuth for the OAuth exchange and for checking a
user's token with the hub (cached by HubOAuth), and the service's token to read users'
models (admin flag, groups) and the user list.

Sessions: after the OAuth callback the browser gets a session cookie of ours (the
``HubSessions`` collection keeps only its hash, with the user's hub token sealed by the
gateway's secret key so that a hub logout ends it too). Every request with it is checked
against the hub (both answers cached briefly), so a user the hub no longer knows, or who
lost admin rights, loses them here within ``CACHE_SECONDS``.

Keys: one per hub user, named ``hub:<user>`` with ``metadata.hub_user``, created on first
use with the budget and limits of ``policy.py``, in the key group of their hub group.
Deleted when the user is gone from the hub: found by reading the user list every
``CONDUIT_JUPYTERHUB_SYNC_INTERVAL`` seconds (a poll, because the hub has no events to
subscribe to; a login or spawn of a deleted user is refused at once anyway).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import tornado.web
from jupyterhub.httpclient import JupyterHubHTTPClient, fetch
from jupyterhub.services.auth import HubOAuth

from conduit_tornado.context import Context
from conduit_tornado.core.errors import ApiError
from conduit_tornado.core.schemas import GroupCreate, KeyCreate, KeyUpdate
from conduit_tornado.store import Doc, log_failure

from .policy import KEY_PREFIX, HubPolicy
from .sessions import CSRF_HEADER, HubSessions

log = logging.getLogger("conduit.hub")
CACHE_SECONDS = 30.0  # how long a hub answer about a user (or their token) is believed
_CACHE_MAX = 10_000
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_HUB_TIMEOUT = 10.0


class HubUnavailable(Exception):
    """The hub's API did not answer as expected (down, or the service token lacks scopes)."""


@dataclass(frozen=True, slots=True)
class HubUser:
    name: str
    admin: bool
    groups: tuple[str, ...]

    @classmethod
    def from_model(cls, model: Mapping[str, Any]) -> HubUser:
        return cls(
            name=str(model["name"]),
            admin=bool(model.get("admin")),
            groups=tuple(str(g) for g in model.get("groups") or ()),
        )


def key_name(user: str) -> str:
    return KEY_PREFIX + user


class Hub:
    """One gateway's link to its hub: identity, sessions and per-user keys."""

    def __init__(
        self,
        ctx: Context,
        policy: HubPolicy,
        prefix: str,
        env: Mapping[str, str] = os.environ,
    ) -> None:
        self.ctx = ctx
        self.policy = policy
        self.prefix = prefix.rstrip("/")  # "" or "/services/conduit"
        token = env.get("JUPYTERHUB_API_TOKEN", "")
        if not token:
            raise ValueError(
                "CONDUIT_JUPYTERHUB=on needs JUPYTERHUB_API_TOKEN (and the other JUPYTERHUB_* "
                "variables the hub sets for a managed service)"
            )
        service = env.get("JUPYTERHUB_SERVICE_NAME", "conduit")
        self.auth = HubOAuth(
            api_token=token,
            api_url=env.get("JUPYTERHUB_API_URL") or "http://127.0.0.1:8081/hub/api",
            oauth_client_id=env.get("JUPYTERHUB_CLIENT_ID") or f"service-{service}",
            base_url=self.prefix + "/",
            cache_max_age=int(CACHE_SECONDS),
            access_scopes=set(json.loads(env.get("JUPYTERHUB_OAUTH_ACCESS_SCOPES") or "[]"))
            or {f"access:services!service={service}"},
        )
        self.sessions = HubSessions(ctx)
        self._users: OrderedDict[str, tuple[float, HubUser | None]] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self.revoked = 0  # keys deleted because their user left the hub

    # -- the hub's API, with the service's token --------------------------------------------

    async def _get(self, path: str, **params: Any) -> Any:
        """GET {api_url}/{path}: the JSON answer, or None on 404."""
        url = self.auth.api_url.rstrip("/") + "/" + path
        if params:
            url += "?" + urlencode(params)
        headers = {
            "Authorization": f"token {self.auth.api_token}",
            "Accept": "application/jupyterhub-pagination+json, application/json",
        }
        try:
            async with asyncio.timeout(_HUB_TIMEOUT):
                response = await fetch(url, method="GET", headers=headers, raise_for_status=False)
                text = await response.text()
        except Exception as exc:  # aiohttp's own errors, timeouts, refused connections
            raise HubUnavailable(f"the hub's API at {self.auth.api_url} did not answer") from exc
        if response.status == 404:
            return None
        if response.status != 200:
            raise HubUnavailable(
                f"the hub's API answered {response.status} to GET {path.split('?')[0]} "
                "(does the service's role have the scopes list:users and read:users?)"
            )
        return json.loads(text)

    async def user(self, name: str, *, fresh: bool = False) -> HubUser | None:
        """The hub's user ``name`` (None: no such user), cached for CACHE_SECONDS."""
        now = time.monotonic()
        hit = self._users.get(name)
        if hit is not None and hit[0] > now and not fresh:
            return hit[1]
        model = await self._get("users/" + quote(name, safe=""))
        user = HubUser.from_model(model) if model is not None else None
        self._users[name] = (now + CACHE_SECONDS, user)
        self._users.move_to_end(name)
        while len(self._users) > _CACHE_MAX:
            self._users.popitem(last=False)
        return user

    async def user_names(self) -> set[str]:
        """Every user the hub has, all pages read (HubUnavailable if any page fails: a
        partial list must never revoke anyone)."""
        names: set[str] = set()
        offset = 0
        while True:
            page = await self._get("users", offset=offset, limit=200)
            if page is None:
                raise HubUnavailable("the hub's API has no /users")
            items = page["items"] if isinstance(page, dict) else page
            names.update(str(u["name"]) for u in items)
            following = page.get("_pagination", {}).get("next") if isinstance(page, dict) else None
            if not following or not items:
                return names
            offset = int(following["offset"])

    # -- who a request is ---------------------------------------------------------------------

    async def request_user(self, handler: tornado.web.RequestHandler) -> HubUser | None:
        """The hub user signed in on this browser (our session cookie), checked with the
        hub; on unsafe methods the session's CSRF token must be in its header."""
        found = await self.sessions.of_request(handler)
        if found is None:
            return None
        session, token = found
        if handler.request.method not in _SAFE_METHODS:
            given = handler.request.headers.get(CSRF_HEADER, "")
            if not self.sessions.csrf_matches(session, given):
                return None
        try:
            model = await self.auth.user_for_token(token, session_id=session.id_hash, sync=False)
        except tornado.web.HTTPError as exc:
            raise ApiError(
                503, "The JupyterHub API cannot be reached to check your sign-in.", code="hub_down"
            ) from exc
        if model is None or model.get("name") != session.user:
            await self.sessions.close(session)  # signed out of the hub, or token revoked
            return None
        if self.auth.access_scopes and not self.auth.check_scopes(self.auth.access_scopes, model):
            return None
        user = await self.checked_user(session.user)
        if user is None:
            await self.sessions.close(session)
        return user

    async def checked_user(self, name: str, *, fresh: bool = False) -> HubUser | None:
        """The user's hub model by the service's token; a user the hub no longer has
        loses their key here and now."""
        try:
            user = await self.user(name, fresh=fresh)
        except HubUnavailable as exc:
            raise ApiError(503, f"JupyterHub: {exc}.", code="hub_unavailable") from exc
        if user is None:
            await self.revoke(name)
        return user

    async def admits_admin(self, handler: tornado.web.RequestHandler) -> bool:
        """The admin API's hook (application setting ``conduit_admin_user``): a signed-in
        hub admin is a gateway admin."""
        user = await self.request_user(handler)
        return user is not None and user.admin

    # -- keys -------------------------------------------------------------------------------

    async def key_of(self, name: str) -> Doc | None:
        docs = await self.ctx.store.find("keys", {"metadata.hub_user": name}, limit=1)
        return docs[0] if docs else None

    async def key_for(self, user: HubUser) -> tuple[Doc, str | None]:
        """The user's key, created on first use (then with its secret, shown once), and
        moved to the key group of their current hub group."""
        # One lock per user (as many as the hub has users): two first requests at once
        # must not make two keys.
        async with self._locks.setdefault(user.name, asyncio.Lock()):
            group = self.policy.group_of(list(user.groups))
            group_name = KEY_PREFIX + group if group is not None else None
            if group is not None:
                await self._ensure_group(group)
            doc = await self.key_of(user.name)
            if doc is None:
                limits = self.policy.user_limits(group)
                body = KeyCreate(
                    name=key_name(user.name),
                    group=group_name,
                    metadata={"hub_user": user.name},
                    **limits.model_dump(exclude_none=True),
                )
                secret, doc = await self.ctx.keys.create(body)
                log.info("hub user %s: key %s created", user.name, doc["_id"])
                return doc, secret
            if doc.get("group") != group_name:
                doc = await self.ctx.keys.update(doc["_id"], KeyUpdate(group=group_name))
            return doc, None

    async def _ensure_group(self, group: str) -> None:
        name = KEY_PREFIX + group
        if await self.ctx.store.get("groups", name) is not None:
            return
        limits = self.policy.groups[group].model_dump(exclude={"user"}, exclude_none=True)
        try:
            await self.ctx.groups.create(
                GroupCreate(name=name, metadata={"hub_group": group}, **limits)
            )
        except ApiError as exc:
            if exc.status != 409:  # created meanwhile by another request: fine
                raise

    async def rotate(self, user: HubUser) -> tuple[Doc, str]:
        """A new secret for the user's key (created if missing); the old one stops working."""
        doc, secret = await self.key_for(user)
        if secret is None:
            secret, doc = await self.ctx.keys.rotate(doc["_id"])
        return doc, secret

    async def revoke(self, name: str) -> bool:
        doc = await self.key_of(name)
        if doc is None:
            return False
        try:
            await self.ctx.keys.delete(doc["_id"])
        except ApiError:  # deleted meanwhile
            return False
        self.revoked += 1
        log.info("hub user %s is gone from the hub: key %s revoked", name, doc["_id"])
        return True

    async def sync(self) -> int:
        """Revoke the keys of users the hub no longer has; returns how many."""
        present = await self.user_names()
        revoked = 0
        offset = 0
        while True:
            docs = await self.ctx.store.find(
                "keys", {"metadata.hub_user": {"$ne": None}}, offset=offset, limit=500
            )
            gone = [d["metadata"]["hub_user"] for d in docs]
            gone = [n for n in gone if n not in present]
            for name in gone:
                self._users.pop(name, None)
                revoked += await self.revoke(name)
            if len(docs) < 500:
                return revoked
            offset += 500 - len(gone)  # deleted ones left the listing

    async def run(self) -> None:
        """The periodic sync, until cancelled; then the hub client's session is closed."""
        try:
            while True:
                try:
                    await self.sync()
                except Exception as exc:  # the hub down, or the store: try again later
                    log_failure(log, exc, "reading the hub's users failed; retrying later")
                await asyncio.sleep(self.ctx.settings.jupyterhub_sync_interval)
        finally:
            await self.close()

    async def close(self) -> None:
        await JupyterHubHTTPClient.loop_instance().close()

    def app_settings(self) -> dict[str, Any]:
        """Tornado application settings: the hub for our handlers, and the admin API's
        hook admitting hub admins."""
        return {
            "conduit_hub": self,
            "conduit_admin_user": self.admits_admin,
            # Signs the OAuth state cookie (HubOAuth sets it with set_secure_cookie). The
            # state itself lives in this process (HubOAuth keeps it in memory) for the
            # minute of a sign-in, so a key of this process's own is enough.
            "cookie_secret": secrets.token_bytes(32),
        }
