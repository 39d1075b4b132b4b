"""The one context object: everything a handler needs, built once per gateway."""

from __future__ import annotations

from dataclasses import dataclass, field

from conduit_tornado.admission.groups import GroupService
from conduit_tornado.admission.keys import KeyService
from conduit_tornado.admission.limits import Limiter
from conduit_tornado.admission.realtime import RealtimeSessions
from conduit_tornado.core.clock import Clock
from conduit_tornado.core.in_flight import InFlight
from conduit_tornado.core.security import SecretBox, hash_key, hashes_match
from conduit_tornado.core.settings import Settings
from conduit_tornado.core.tracing import Tracing
from conduit_tornado.metering.alerts import Alerts
from conduit_tornado.metering.metrics import Histogram, overhead_histogram
from conduit_tornado.metering.pricing import MediaPrices, PriceTable
from conduit_tornado.metering.recorder import Recorder
from conduit_tornado.routing.catalog import Catalog
from conduit_tornado.routing.router import Router
from conduit_tornado.routing.upstream import Upstream

from .store import Store


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
    in_flight: InFlight = field(default_factory=InFlight)
    overhead: Histogram = field(default_factory=overhead_histogram)
    tracing: Tracing | None = None  # None: tracing off (core/tracing.py)

    def is_master_key(self, token: str | None) -> bool:
        if not token or not self.master_key_hash or len(token) > 256:
            return False
        return hashes_match(hash_key(token), self.master_key_hash)
