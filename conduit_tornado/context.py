"""The one context object: everything a handler needs, built once per gateway."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from .accounting import Recorder
from .catalog import Catalog
from .clock import Clock
from .keys import KeyService
from .pricing import PriceTable
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
    master_key_hash: str = ""
    in_flight: int = 0
    #: Set by a shutdown that waits for in-flight requests; handlers set it at zero.
    drained: asyncio.Event | None = None
    counters: dict[str, int] = field(default_factory=dict)

    def is_master_key(self, token: str | None) -> bool:
        if not token or not self.master_key_hash or len(token) > 256:
            return False
        return hashes_match(hash_key(token), self.master_key_hash)

    def count(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount
