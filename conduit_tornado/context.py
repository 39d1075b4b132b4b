"""The one context object: everything a handler needs, built once per gateway."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from .accounting import Recorder
from .alerts import Alerts
from .catalog import Catalog
from .clock import Clock
from .groups import GroupService
from .keys import KeyService
from .limits import Limiter
from .metrics import Histogram, overhead_histogram
from .pricing import MediaPrices, PriceTable
from .realtime import RealtimeSessions
from .routing import Router
from .security import SecretBox, hash_key, hashes_match
from .settings import Settings
from .store import Store
from .upstream import Upstream


@dataclass
class Context:
    settings: Settings
    store: Store
    clock: Clock
    box: SecretBox
    keys: KeyService
    catalog: Catalog
    upstream: Upstream
    router: Router
    recorder: Recorder
    prices: PriceTable
    media_prices: MediaPrices
    limiter: Limiter
    groups: GroupService
    alerts: Alerts
    realtime: RealtimeSessions
    master_key_hash: str = ""
    in_flight: int = 0
    #: Set by a shutdown that waits for in-flight requests; handlers set it at zero.
    drained: asyncio.Event | None = None

    def is_master_key(self, token: str | None) -> bool:
        if not token or not self.master_key_hash or len(token) > 256:
            return False
        return hashes_match(hash_key(token), self.master_key_hash)

    background: set[asyncio.Task[None]] = field(default_factory=set)
    overhead: Histogram = field(default_factory=overhead_histogram)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run work after a response (settling limits): kept referenced, awaited at stop."""
        task = asyncio.ensure_future(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
