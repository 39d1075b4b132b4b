"""Web UI sign-in: sessions kept in the store, and a brake on repeated failed sign-ins.

A session (ui/stored_sessions.py: a random id in an HttpOnly cookie, only its hash stored,
a CSRF token derived from it) is kept together with the hash of the master key it was
opened with. When the gateway starts with another master key every session opened with the
old one stops working: rotating the master key signs everyone out.

State-changing calls need the CSRF token in a header (SameSite=Strict already stops most
forgeries); only a page of ours gets it, from /ui/api/session.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import tornado.web

from conduit_tornado.core.security import hashes_match

from .stored_sessions import CSRF_HEADER, StoredSessions, csrf_matches

COLLECTION = "ui_sessions"
COOKIE = "conduit_ui_session"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Session:
    id_hash: str
    expires_at: datetime
    csrf: str


class UiSessions(StoredSessions):
    """Opens, checks and ends sessions. ``context`` is the gateway's Context (duck-typed:
    the store, the clock, the settings and the current master key's hash)."""

    def __init__(self, context: Any) -> None:
        super().__init__(context, COLLECTION, b"conduit-ui-csrf:")
        self.throttle = LoginThrottle()

    async def open(self, user_agent: str) -> tuple[str, Session]:
        """A new session for whoever presented the master key; returns the cookie value."""
        session_id, id_hash, expires = await self.insert(
            {"master": self._ctx.master_key_hash, "user_agent": user_agent[:200]}
        )
        return session_id, Session(id_hash, expires, self.csrf_token(session_id))

    async def find(self, session_id: str | None) -> Session | None:
        found = await self.live(session_id) if session_id else None
        if found is None or not session_id:
            return None
        doc, expires = found
        master = self._ctx.master_key_hash
        if not master or not hashes_match(str(doc.get("master", "")), master):
            await self.remove(doc["_id"])  # opened with a former master key
            return None
        return Session(doc["_id"], expires, self.csrf_token(session_id))

    async def close(self, session: Session) -> None:
        await self.remove(session.id_hash)

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
        return csrf_matches(session.csrf, handler.request.headers.get(CSRF_HEADER, ""))


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


__all__ = ["COLLECTION", "COOKIE", "CSRF_HEADER", "LoginThrottle", "Session", "UiSessions"]
