"""Liveness and readiness: unauthenticated and cheap."""

from __future__ import annotations

import asyncio
import os

from conduit_tornado.core.errors import store_unavailable

from .base import PublicHandler


class LiveHandler(PublicHandler):
    def get(self) -> None:
        # The pid tells which worker process answered (serve --workers).
        self.send_json({"status": "ok", "pid": os.getpid()})


class ReadyHandler(PublicHandler):
    async def get(self) -> None:
        try:
            await asyncio.wait_for(self.ctx.store.ping(), timeout=2.0)
        except Exception:
            raise store_unavailable() from None
        self.send_json({"status": "ok", "store": self.ctx.store.kind})
