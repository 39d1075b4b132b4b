"""Browser sessions of hub users, opened by the OAuth callback.

The mechanism of the web UI's master-key sessions (ui/stored_sessions.py: a 256-bit id in an
HttpOnly cookie, only its SHA-256 in the store, a CSRF token derived from the id, required
in a header on state-changing calls), in a collection of their own: those die with the
master key, these with the user's hub token, kept beside the session sealed with the
gateway's secret key (a read of the store alone gives neither a cookie nor a token).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import tornado.web

from conduit_tornado.context import Context
from conduit_tornado.core.security import CredentialError
from conduit_tornado.ui import stored_sessions
from conduit_tornado.ui.stored_sessions import CSRF_HEADER, StoredSessions

COLLECTION = "hub_sessions"
COOKIE = "conduit_hub_session"


@dataclass(frozen=True, slots=True)
class HubSession:
    id_hash: str
    user: str
    expires_at: datetime
    csrf: str


class HubSessions(StoredSessions):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx, COLLECTION, b"conduit-hub-csrf:")

    async def open(self, user: str, hub_token: str) -> tuple[str, HubSession]:
        session_id, id_hash, expires = await self.insert(
            {"user": user, "token": self._ctx.box.encrypt(hub_token)}
        )
        return session_id, HubSession(id_hash, user, expires, self.csrf_token(session_id))

    async def of_request(
        self, handler: tornado.web.RequestHandler
    ) -> tuple[HubSession, str] | None:
        """The live session named by the request's cookie, and the user's hub token."""
        session_id = handler.get_cookie(COOKIE)
        found = await self.live(session_id) if session_id else None
        if found is None or not session_id:
            return None
        doc, expires = found
        try:
            token = self._ctx.box.decrypt(str(doc["token"]))
        except CredentialError:  # sealed under another secret key: sign in again
            await self.remove(doc["_id"])
            return None
        session = HubSession(doc["_id"], str(doc["user"]), expires, self.csrf_token(session_id))
        return session, token

    @staticmethod
    def csrf_matches(session: HubSession, given: str) -> bool:
        return stored_sessions.csrf_matches(session.csrf, given)

    async def close(self, session: HubSession) -> None:
        await self.remove(session.id_hash)


__all__ = ["COLLECTION", "COOKIE", "CSRF_HEADER", "HubSession", "HubSessions"]
