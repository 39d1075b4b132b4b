"""Browser sessions of hub users, opened by the OAuth callback.

Like the master-key sessions of ui/sessions.py (kept apart: those die with the master key,
these with the user's hub token): a 256-bit id in an HttpOnly cookie, only its SHA-256 in
the store; the user's hub OAuth token beside it sealed with the gateway's secret key (a
read of the store alone gives neither a cookie nor a token); a CSRF token derived from the
id, required in a header on state-changing calls.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import tornado.web

from conduit_tornado.context import Context
from conduit_tornado.core.security import CredentialError, hash_key, hashes_match

COLLECTION = "hub_sessions"
COOKIE = "conduit_hub_session"
CSRF_HEADER = "X-Conduit-CSRF"  # the header the web UI sends for its own sessions too
_SESSION_ID_CHARS = 43  # secrets.token_urlsafe(32)


def csrf_token(session_id: str) -> str:
    return hashlib.sha256(b"conduit-hub-csrf:" + session_id.encode("ascii")).hexdigest()


@dataclass(frozen=True, slots=True)
class HubSession:
    id_hash: str
    user: str
    expires_at: datetime
    csrf: str


class HubSessions:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    async def open(self, user: str, hub_token: str) -> tuple[str, HubSession]:
        ctx = self._ctx
        session_id = secrets.token_urlsafe(32)
        now = ctx.clock.now()
        expires = now + timedelta(hours=ctx.settings.ui_session_hours)
        id_hash = hash_key(session_id)
        await ctx.store.insert(
            COLLECTION,
            {
                "_id": id_hash,
                "user": user,
                "token": ctx.box.encrypt(hub_token),
                "created_at": now,
                "expires_at": expires,
            },
        )
        # A few expired sessions go at each sign-in: the collection stays small without a task.
        for doc in await ctx.store.find(COLLECTION, {"expires_at": {"$lt": now}}, limit=50):
            await ctx.store.delete(COLLECTION, doc["_id"])
        return session_id, HubSession(id_hash, user, expires, csrf_token(session_id))

    async def of_request(
        self, handler: tornado.web.RequestHandler
    ) -> tuple[HubSession, str] | None:
        """The live session named by the request's cookie, and the user's hub token."""
        session_id = handler.get_cookie(COOKIE)
        if not session_id or len(session_id) != _SESSION_ID_CHARS:
            return None
        ctx = self._ctx
        id_hash = hash_key(session_id)
        doc = await ctx.store.get(COLLECTION, id_hash)
        if doc is None:
            return None
        expires: datetime = doc["expires_at"]
        now = ctx.clock.now()
        if expires.tzinfo is None:  # stores that drop the zone keep UTC
            expires = expires.replace(tzinfo=now.tzinfo)
        try:
            token = ctx.box.decrypt(str(doc["token"]))
        except CredentialError:  # sealed under another secret key: sign in again
            token = None
        if expires <= now or token is None:
            await ctx.store.delete(COLLECTION, id_hash)
            return None
        session = HubSession(id_hash, str(doc["user"]), expires, csrf_token(session_id))
        return session, token

    @staticmethod
    def csrf_matches(session: HubSession, given: str) -> bool:
        return len(given) == len(session.csrf) and hashes_match(given, session.csrf)

    async def close(self, session: HubSession) -> None:
        await self._ctx.store.delete(COLLECTION, session.id_hash)
