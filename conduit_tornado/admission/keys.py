"""Virtual keys: creation, rotation, the cached lookup on the hot path, access rules."""

from __future__ import annotations

import ipaddress
import secrets
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from conduit_tornado.core import meters
from conduit_tornado.core.clock import Clock
from conduit_tornado.core.errors import ApiError, invalid_api_key, not_found, reject_nulls
from conduit_tornado.core.money import money
from conduit_tornado.core.schemas import KeyCreate, KeyFields, KeyUpdate
from conduit_tornado.core.security import KEY_PREFIX, hash_key, new_virtual_key, visible_prefix
from conduit_tornado.store import SETTLED, Doc, Store, StoreUnavailable
from conduit_tornado.store.changes import KEYS, note

COLLECTION = "keys"
_HIDDEN = frozenset({"_id", "hash", SETTLED})  # SETTLED: the limiter's bookkeeping
_CACHE_MAX = 100_000


@dataclass(frozen=True, slots=True)
class Globs:
    """Model name patterns where ``*`` stands for any run of characters. Matched by hand,
    segment by segment with str.find, in linear time: as a regex, several ``*`` in one
    pattern backtrack polynomially on a long name."""

    patterns: tuple[tuple[str, ...], ...]  # each pattern split at its stars

    @classmethod
    def of(cls, globs: list[str]) -> Globs | None:
        return cls(tuple(tuple(g.split("*")) for g in globs)) if globs else None

    def match(self, name: str) -> bool:
        return any(_glob_match(parts, name) for parts in self.patterns)


def _glob_match(parts: tuple[str, ...], name: str) -> bool:
    if len(parts) == 1:
        return name == parts[0]
    first, last = parts[0], parts[-1]
    end = len(name) - len(last)
    if end < len(first) or not name.startswith(first) or not name.endswith(last):
        return False
    at = len(first)
    for part in parts[1:-1]:  # leftmost is always right: a later one only leaves less room
        found = name.find(part, at, end)
        if found < 0:
            return False
        at = found + len(part)
    return True


@dataclass(frozen=True, slots=True)
class VirtualKey:
    """What the hot path needs to know about a key, parsed once per cache fill."""

    id: str
    name: str
    enabled: bool
    expires_at: datetime | None
    models: Globs | None
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    group: str | None
    doc: Doc

    @classmethod
    def from_doc(cls, doc: Doc) -> VirtualKey:
        return cls(
            id=doc["_id"],
            name=doc["name"],
            enabled=bool(doc.get("enabled", True)),
            expires_at=doc.get("expires_at"),
            models=Globs.of(doc.get("allowed_models") or []),
            networks=tuple(ipaddress.ip_network(n) for n in doc.get("allowed_ips") or []),
            group=doc.get("group"),
            doc=doc,
        )

    def allows_model(self, model: str) -> bool:
        return self.models is None or self.models.match(model)

    def allows_ip(self, address: str) -> bool:
        if not self.networks:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)


def _nested_limits(body: KeyFields, names: Iterable[str]) -> dict[str, Any]:
    """model_limits / user_limits as stored: unset limits left out, null meaning none."""
    compact = body.model_dump(exclude_none=True)
    return {name: compact.get(name, {}) for name in names}


def key_view(doc: Doc) -> dict[str, Any]:
    """The admin API's view of a key: never the hash, never the key itself."""
    out = {"id": doc["_id"]}
    out.update({k: v for k, v in doc.items() if k not in _HIDDEN})
    # Present on every key (0 until it is used: keys created before it was stored lack
    # it), and rounded: sums of costs carry float noise.
    out["spend"] = money(doc.get("spend"))
    out["total_spend"] = money(doc.get("total_spend"))
    return out


class KeyService:
    def __init__(self, store: Store, clock: Clock, cache_ttl: float) -> None:
        self._store = store
        self._clock = clock
        self._ttl = cache_ttl
        self._cache: OrderedDict[str, tuple[float, VirtualKey]] = OrderedDict()

    # -- hot path -------------------------------------------------------------------------

    async def authenticate(self, token: str | None) -> VirtualKey:
        """Resolve a presented key or raise 401. One dict lookup when cached."""
        if not token or not token.startswith(KEY_PREFIX) or len(token) > 256:
            raise invalid_api_key()
        digest = hash_key(token)
        now = self._clock.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            meters.KEY_CACHE_HITS.n += 1
            key = hit[1]
        else:
            meters.KEY_CACHE_MISSES.n += 1
            try:
                doc = await self._store.find_one(COLLECTION, {"hash": digest})
            except StoreUnavailable:
                if hit is None:
                    raise
                # Stale if the store is down: a key read before the outage still serves.
                # (Its admin changes need the store too, so none can be missed meanwhile.)
                return self.check(hit[1])
            if doc is None:
                self._cache.pop(digest, None)
                raise invalid_api_key()
            key = VirtualKey.from_doc(doc)
            if self._ttl > 0:
                self._cache[digest] = (now + self._ttl, key)
                if len(self._cache) > _CACHE_MAX:
                    self._cache.popitem(last=False)
        return self.check(key)

    def check(self, key: VirtualKey) -> VirtualKey:
        """Refuse disabled and expired keys (401, and no point retrying)."""
        if not key.enabled:
            raise ApiError(
                401,
                "This API key is disabled.",
                code="invalid_api_key",
                headers={"x-should-retry": "false"},
            )
        if key.expires_at is not None and key.expires_at <= self._clock.now():
            raise ApiError(
                401,
                "This API key has expired.",
                code="invalid_api_key",
                headers={"x-should-retry": "false"},
            )
        return key

    async def by_id(self, key_id: str) -> VirtualKey:
        """The key behind a realtime session's ephemeral secret, read fresh."""
        doc = await self._store.get(COLLECTION, key_id)
        if doc is None:
            raise invalid_api_key()
        return self.check(VirtualKey.from_doc(doc))

    def invalidate(self, key_id: str | None = None) -> None:
        """Drop a key's cached lookups (None: every key's: the change feed lost count)."""
        if key_id is None:
            self._cache.clear()
            return
        for digest, (_, key) in list(self._cache.items()):
            if key.id == key_id:
                del self._cache[digest]

    async def _changed(self, key_id: str) -> None:
        self.invalidate(key_id)
        await note(self._store, KEYS, key_id)  # and on the other instances (changes.py)

    # -- admin ----------------------------------------------------------------------------

    async def create(self, body: KeyCreate) -> tuple[str, Doc]:
        now = self._clock.now()
        secret = new_virtual_key()
        doc: Doc = {
            "_id": "key_" + secrets.token_hex(12),
            "hash": hash_key(secret),
            "prefix": visible_prefix(secret),
            "name": body.name,
            "enabled": True if body.enabled is None else body.enabled,
            "created_at": now,
            "updated_at": now,
            "expires_at": body.expires_at,
            "last_used_at": None,
            "allowed_models": body.allowed_models or [],
            "allowed_ips": body.allowed_ips or [],
            "rpm": body.rpm,
            "rpd": body.rpd,
            "tpm": body.tpm,
            "max_parallel": body.max_parallel,
            "max_realtime_sessions": body.max_realtime_sessions,
            "max_budget": body.max_budget,
            "budget_duration": body.budget_duration or ("total" if body.max_budget else None),
            "spend": 0.0,
            "total_spend": 0.0,
            "period_start": now,
            "group": body.group,
            "metadata": body.metadata or {},
            **_nested_limits(body, ("model_limits", "user_limits")),
        }
        await self._store.insert(COLLECTION, doc)
        return secret, doc

    async def get(self, key_id: str) -> Doc:
        doc = await self._store.get(COLLECTION, key_id)
        if doc is None:
            raise not_found(f"No key with id {key_id!r}.", code="key_not_found")
        return doc

    async def update(self, key_id: str, body: KeyUpdate) -> Doc:
        fields = body.model_dump(exclude_unset=True)
        fields.update(
            _nested_limits(body, [n for n in ("model_limits", "user_limits") if n in fields])
        )
        if "metadata" in fields and fields["metadata"] is None:
            fields["metadata"] = {}
        reject_nulls(fields, "name", "enabled")
        for listish in ("allowed_models", "allowed_ips"):
            if listish in fields and fields[listish] is None:
                fields[listish] = []
        fields["updated_at"] = self._clock.now()
        doc = await self._store.update(COLLECTION, key_id, fields)
        if doc is None:
            raise not_found(f"No key with id {key_id!r}.", code="key_not_found")
        await self._changed(key_id)
        return doc

    async def rotate(self, key_id: str) -> tuple[str, Doc]:
        secret = new_virtual_key()
        doc = await self._store.update(
            COLLECTION,
            key_id,
            {
                "hash": hash_key(secret),
                "prefix": visible_prefix(secret),
                "updated_at": self._clock.now(),
            },
        )
        if doc is None:
            raise not_found(f"No key with id {key_id!r}.", code="key_not_found")
        await self._changed(key_id)
        return secret, doc

    async def delete(self, key_id: str) -> None:
        if not await self._store.delete(COLLECTION, key_id):
            raise not_found(f"No key with id {key_id!r}.", code="key_not_found")
        await self._changed(key_id)

    async def list(
        self, *, name: str | None, enabled: bool | None, group: str | None, offset: int, limit: int
    ) -> tuple[list[Doc], int]:
        where: dict[str, Any] = {}
        if name is not None:
            where["name"] = name
        if enabled is not None:
            where["enabled"] = enabled
        if group is not None:
            where["group"] = group
        docs = await self._store.find(
            COLLECTION, where, sort="created_at", descending=True, offset=offset, limit=limit
        )
        return docs, await self._store.count(COLLECTION, where)

    async def touch(self, used: dict[str, datetime]) -> None:
        """Record last use; called in batches by the background writer, not per request."""
        for key_id, when in used.items():
            await self._store.update(COLLECTION, key_id, {"last_used_at": when})
