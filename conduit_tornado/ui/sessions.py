"""Web UI sign-in: sessions kept in the store, and a brake on repeated failed sign-ins.

A session id is 256 random bits handed to the browser in an HttpOnly cookie; the store
keeps only its SHA-256 (so a read of the store gives no usable cookie) together with the
hash of the master key it was opened with. When the gateway starts with another master key
every session opened with the old one stops working: rotating the master key signs
everyone out. Sessions live in the store, so every gateway instance sharing it accepts them.

State-changing calls also need a second token in a header: a page on another origin can
make the browser send the cookie (SameSite=Strict already stops most of that), but cannot
read the token, which only a page of ours gets from /ui/api/session. The token is derived
from the session id, so nothing more is stored.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import tornado.web

from conduit_tornado.core.security import hash_key, hashes_match
from conduit_tornado.store import Store

COLLECTION = "ui_sessions"
COOKIE = "conduit_ui_session"
CSRF_HEADER = "X-Conduit-CSRF"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SESSION_ID_CHARS = 43  # secrets.token_urlsafe(32)


def csrf_token(session_id: str) -> str:
    return hashlib.sha256(b"conduit-ui-csrf:" + session_id.encode("ascii")).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    id_hash: str
    expires_at: datetime
    csrf: str


class UiSessions:
    """Opens, checks and ends sessions. ``context`` is the gateway's Context (duck-typed:
    the store, the clock, the settings and the current master key's hash)."""

    def __init__(self, context: Any) -> None:
        self._ctx = context
        self.throttle = LoginThrottle()

    @property
    def _store(self) -> Store:
        store: Store = self._ctx.store
        return store

    def _now(self) -> datetime:
        now: datetime = self._ctx.clock.now()
        return now

    async def open(self, user_agent: str) -> tuple[str, Session]:
        """A new session for whoever presented the master key; returns the cookie value."""
        session_id = secrets.token_urlsafe(32)
        now = self._now()
        expires = now + timedelta(hours=self._ctx.settings.ui_session_hours)
        id_hash = hash_key(session_id)
        await self._store.insert(
            COLLECTION,
            {
                "_id": id_hash,
                "master": self._ctx.master_key_hash,
                "created_at": now,
                "expires_at": expires,
                "user_agent": user_agent[:200],
            },
        )
        await self._sweep(now)
        return session_id, Session(id_hash, expires, csrf_token(session_id))

    async def find(self, session_id: str | None) -> Session | None:
        if not session_id or len(session_id) != _SESSION_ID_CHARS:
            return None
        id_hash = hash_key(session_id)
        doc = await self._store.get(COLLECTION, id_hash)
        if doc is None:
            return None
        master = self._ctx.master_key_hash
        if not master or not hashes_match(str(doc.get("master", "")), master):
            await self._store.delete(COLLECTION, id_hash)  # opened with a former master key
            return None
        expires: datetime = doc["expires_at"]
        if expires.tzinfo is None:  # stores that drop the zone keep UTC
            expires = expires.replace(tzinfo=self._now().tzinfo)
        if expires <= self._now():
            await self._store.delete(COLLECTION, id_hash)
            return None
        return Session(id_hash, expires, csrf_token(session_id))

    async def close(self, session: Session) -> None:
        await self._store.delete(COLLECTION, session.id_hash)

    async def _sweep(self, now: datetime) -> None:
        """Remove a few expired sessions at each sign-in, so the collection stays small
        without a background task."""
        for doc in await self._store.find(COLLECTION, {"expires_at": {"$lt": now}}, limit=50):
            await self._store.delete(COLLECTION, doc["_id"])

    async def of_request(self, handler: tornado.web.RequestHandler) -> Session | None:
        return await self.find(handler.get_cookie(COOKIE))

    async def admits(self, handler: tornado.web.RequestHandler) -> bool:
        """The admin API's check for a browser: a live session cookie and, on any
        state-changing method, the session's CSRF token in a header."""
        session = await self.of_request(handler)
        if session is None:
            return False
        if handler.request.method in _SAFE_METHODS:
            return True
        given = handler.request.headers.get(CSRF_HEADER, "")
        return len(given) == len(session.csrf) and hashes_match(given, session.csrf)


class LoginThrottle:
    """Failed sign-ins per client address: the first few are free, then each further one
    locks that address out for twice as long as the last (capped). Memory is bounded: the
    least recently seen addresses are forgotten first."""

    def __init__(self, free: int = 3, max_wait: float = 60.0, max_addresses: int = 10_000) -> None:
        self.free = free
        self.max_wait = max_wait
        self.max_addresses = max_addresses
        self._entries: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def wait(self, address: str, now: float | None = None) -> float:
        """Seconds this address must still wait before its next attempt (0: go ahead)."""
        entry = self._entries.get(address)
        if entry is None:
            return 0.0
        now = time.monotonic() if now is None else now
        return max(0.0, entry[1] - now)

    def failed(self, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        failures = self._entries.pop(address, (0, 0.0))[0] + 1
        over = failures - self.free
        locked_until = now + min(self.max_wait, 2.0**over) if over > 0 else 0.0
        self._entries[address] = (failures, locked_until)
        while len(self._entries) > self.max_addresses:
            self._entries.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._entries.pop(address, None)

    def __len__(self) -> int:
        return len(self._entries)
