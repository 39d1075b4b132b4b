"""Browser sessions kept in a store collection: the one mechanism behind the web UI's
sessions (ui/sessions.py, opened with the master key) and the hub users' (hub/sessions.py,
opened by Hub OAuth).

A session id is 256 random bits handed to the browser in an HttpOnly cookie; the store
keeps only its SHA-256 (so a read of the store gives no usable cookie). Sessions live in the
store, so every gateway instance sharing it accepts them. State-changing calls also need a
second token in a header: a page on another origin can make the browser send the cookie,
but cannot read the token, which only a page of ours gets. The token is derived from the
session id (with a salt of each kind of session), so nothing more is stored.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from conduit_tornado.core.security import hash_key, hashes_match
from conduit_tornado.store import Doc, Store

CSRF_HEADER = "X-Conduit-CSRF"
SESSION_ID_CHARS = 43  # secrets.token_urlsafe(32)


def csrf_matches(expected: str, given: str) -> bool:
    return len(given) == len(expected) and hashes_match(given, expected)


class StoredSessions:
    """Opens, finds and ends the sessions of one collection. ``context`` is the gateway's
    Context (duck-typed: the store, the clock and the settings)."""

    def __init__(self, context: Any, collection: str, csrf_salt: bytes) -> None:
        self._ctx = context
        self.collection = collection
        self._csrf_salt = csrf_salt

    @property
    def _store(self) -> Store:
        store: Store = self._ctx.store
        return store

    def _now(self) -> datetime:
        now: datetime = self._ctx.clock.now()
        return now

    def csrf_token(self, session_id: str) -> str:
        return hashlib.sha256(self._csrf_salt + session_id.encode("ascii")).hexdigest()

    async def insert(self, fields: dict[str, Any]) -> tuple[str, str, datetime]:
        """A new session holding ``fields``: its cookie value, the hash the store keeps,
        and when it expires (CONDUIT_UI_SESSION_HOURS from now)."""
        session_id = secrets.token_urlsafe(32)
        now = self._now()
        expires = now + timedelta(hours=self._ctx.settings.ui_session_hours)
        id_hash = hash_key(session_id)
        await self._store.insert(
            self.collection, {"_id": id_hash, **fields, "created_at": now, "expires_at": expires}
        )
        # A few expired sessions go at each sign-in: the collection stays small without a task.
        for doc in await self._store.find(self.collection, {"expires_at": {"$lt": now}}, limit=50):
            await self._store.delete(self.collection, doc["_id"])
        return session_id, id_hash, expires

    async def live(self, session_id: str) -> tuple[Doc, datetime] | None:
        """The stored session a cookie names, and when it expires; None for an unknown or
        malformed id, or an expired session (which is removed)."""
        if len(session_id) != SESSION_ID_CHARS:
            return None
        id_hash = hash_key(session_id)
        doc = await self._store.get(self.collection, id_hash)
        if doc is None:
            return None
        expires: datetime = doc["expires_at"]
        now = self._now()
        if expires.tzinfo is None:  # stores that drop the zone keep UTC
            expires = expires.replace(tzinfo=now.tzinfo)
        if expires <= now:
            await self.remove(id_hash)
            return None
        return doc, expires

    async def remove(self, id_hash: str) -> None:
        await self._store.delete(self.collection, id_hash)
