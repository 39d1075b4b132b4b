"""The in-process store: the zero-setup default. Nothing survives a restart."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from .base import FILTER_OPERATORS, RETAINED, SETTLED, UNIQUE_FIELDS, Doc, DuplicateError, Where

_CONTAINERS = (dict, list)
YIELD_EVERY = 20  # documents inserted between giving the event loop a turn


def _copy(value: Any) -> Any:
    """Copy a document tree. Documents hold dicts, lists and immutable scalars (numbers,
    strings, datetimes, None), so only containers need copying; this is several times
    faster than copy.deepcopy, which dominated the hot path in profiles. Scalars are
    taken as they are without a call each (most fields are scalars)."""
    if isinstance(value, dict):
        return {k: _copy(v) if isinstance(v, _CONTAINERS) else v for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) if isinstance(v, _CONTAINERS) else v for v in value]
    return value


_GRACE = timedelta(days=1)  # the longest window (a day): see _expire


def _doc(doc: Doc) -> Doc:
    copied: Doc = _copy(doc)  # _copy, typed as a document
    return copied


def _only(doc: Doc, fields: Sequence[str]) -> Doc:
    return {k: _copy(doc[k]) for k in ("_id", *fields) if k in doc}


def _get(doc: Mapping[str, Any], path: str) -> Any:
    if "." not in path:  # most fields: no walk
        return doc.get(path)
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def matches(doc: Mapping[str, Any], where: Where) -> bool:
    for field, cond in where.items():
        value = _get(doc, field)
        if type(cond) is dict and cond and all(k[0] == "$" for k in cond):
            for op, arg in cond.items():
                if not _apply(op, value, arg):
                    return False
        elif value != cond:
            return False
    return True


def _apply(op: str, value: Any, arg: Any) -> bool:
    if op not in FILTER_OPERATORS:
        raise ValueError(f"unsupported filter operator {op}")
    if op == "$in":
        return value in arg
    if op == "$ne":
        return bool(value != arg)
    if value is None:  # MongoDB: a missing field never satisfies a range.
        return False
    if op == "$gte":
        return bool(value >= arg)
    if op == "$gt":
        return bool(value > arg)
    if op == "$lte":
        return bool(value <= arg)
    return bool(value < arg)


def _walk(doc: Doc, path: str) -> tuple[Doc, str]:
    """The sub-document holding a dotted path's last part, created as needed."""
    if "." not in path:
        return doc, path
    *parents, leaf = path.split(".")
    for part in parents:
        doc = doc.setdefault(part, {})
    return doc, leaf


#: What the in-process store keeps only the newest of: the retained collections, and
#: conversations, which a client could otherwise grow without end in a process's memory.
_BOUNDED = (*RETAINED, "conversations", "conversation_items")


class MemoryStore:
    """Bounded, since it lives as long as the process: it keeps the newest ``max_logs``
    documents of each retained collection (request logs, stored responses, conversations),
    and drops limit windows once they have ended (what TTL indexes do on MongoDB)."""

    kind = "memory"
    persistent = False

    def __init__(self, *, max_logs: int = 10_000) -> None:
        # The bounded collections drop their oldest document per insert once full: an
        # OrderedDict does that in constant time, where a dict's first live entry is found
        # by walking past the ones deleted before it (bench/MEASUREMENTS.md).
        self._bounded: dict[str, OrderedDict[str, Doc]] = {name: OrderedDict() for name in _BOUNDED}
        self._data: dict[str, dict[str, Doc]] = dict(self._bounded)
        self._max_logs = max_logs

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    def _coll(self, name: str) -> dict[str, Doc]:
        return self._data.setdefault(name, {})

    def _check_unique(self, collection: str, doc: Doc, ignore_id: str | None = None) -> None:
        coll = self._coll(collection)
        for field in UNIQUE_FIELDS.get(collection, ()):
            if field not in doc:
                continue
            for other in coll.values():
                if other["_id"] != ignore_id and other.get(field) == doc[field]:
                    raise DuplicateError(collection, field)

    async def insert(self, collection: str, doc: Doc) -> None:
        self._add(collection, doc)

    async def insert_many(self, collection: str, docs: Sequence[Doc]) -> None:
        for i, doc in enumerate(docs, 1):
            self._add(collection, doc)
            if i % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # copying is CPU work: let requests run between

    def _add(self, collection: str, doc: Doc) -> None:
        coll = self._coll(collection)
        if doc["_id"] in coll:
            raise DuplicateError(collection, "_id")
        if collection in UNIQUE_FIELDS:
            self._check_unique(collection, doc)
        coll[doc["_id"]] = _copy(doc)
        if len(coll) > self._max_logs:
            bounded = self._bounded.get(collection)
            if bounded is not None:
                bounded.popitem(last=False)  # the oldest

    async def get(
        self, collection: str, id: str, fields: Sequence[str] | None = None
    ) -> Doc | None:
        doc = self._coll(collection).get(id)
        if doc is None:
            return None
        return _doc(doc) if fields is None else _only(doc, fields)

    async def find_one(self, collection: str, where: Where) -> Doc | None:
        for doc in self._coll(collection).values():
            if matches(doc, where):
                return _doc(doc)
        return None

    async def find(
        self,
        collection: str,
        where: Where,
        *,
        sort: str = "_id",
        descending: bool = False,
        offset: int = 0,
        limit: int = 100,
    ) -> list[Doc]:
        found = [d for d in self._coll(collection).values() if matches(d, where)]
        # Like MongoDB: documents missing the sort field sort first; ties by _id.
        found.sort(
            key=lambda d: (d.get(sort) is not None, d.get(sort), d["_id"]), reverse=descending
        )
        return [_copy(d) for d in found[offset : offset + limit]]

    async def count(self, collection: str, where: Where) -> int:
        return sum(1 for d in self._coll(collection).values() if matches(d, where))

    async def update(
        self,
        collection: str,
        id: str,
        set: Mapping[str, Any] | None = None,
        unset: Sequence[str] = (),
        *,
        where: Where | None = None,
    ) -> Doc | None:
        doc = self._coll(collection).get(id)
        if doc is None or (where is not None and not matches(doc, where)):
            return None
        changed = {**doc, **_copy(dict(set or {}))}
        for field in unset:
            changed.pop(field, None)
        self._check_unique(collection, changed, ignore_id=id)
        self._coll(collection)[id] = changed
        return _doc(changed)

    @staticmethod
    def _expire(coll: dict[str, Doc], new_end: Any) -> None:
        """Drop windows that have surely ended. The store keeps no clock, but a window being
        created now ends at most a day from now, so one that ended a day before it is over."""
        cutoff = new_end - _GRACE
        for key in [
            k
            for k, d in coll.items()
            if d.get("expires_at") is not None and d["expires_at"] <= cutoff
        ]:
            del coll[key]

    async def delete(self, collection: str, id: str) -> bool:
        return self._coll(collection).pop(id, None) is not None

    async def increment(
        self,
        collection: str,
        id: str,
        inc: Mapping[str, float | int],
        *,
        set_on_insert: Mapping[str, Any] | None = None,
        set: Mapping[str, Any] | None = None,
        where: Where | None = None,
        upsert: bool = True,
        returning: bool | Sequence[str] = True,
    ) -> Doc | None:
        coll = self._coll(collection)
        doc = coll.get(id)
        if doc is not None and where is not None and not matches(doc, where):
            doc = None
            if id in coll:  # exists but does not match: like MongoDB, no upsert over it
                return None
        if doc is None:
            if not upsert:
                return None
            doc = {"_id": id, **_copy(dict(set_on_insert or {}))}
            if "expires_at" in doc:  # a new window: a good moment to drop ended ones
                self._expire(coll, doc["expires_at"])
            coll[id] = doc
        for path, value in (set or {}).items():
            parent, leaf = _walk(doc, path)
            parent[leaf] = _copy(value)
        for path, amount in inc.items():
            parent, leaf = _walk(doc, path)
            parent[leaf] = parent.get(leaf, 0) + amount
        if returning is True:
            return _doc(doc)
        return _only(doc, returning) if returning else {}

    async def increment_many(
        self,
        collection: str,
        changes: Mapping[str, Mapping[str, float | int]],
        *,
        once: tuple[str, int] | None = None,
    ) -> None:
        coll = self._coll(collection)
        for id, inc in changes.items():
            doc = coll.get(id)
            if doc is not None:
                if once is not None:
                    settled = doc.setdefault(SETTLED, {})
                    if settled.get(once[0]) == once[1]:
                        continue  # took this batch already
                    settled[once[0]] = once[1]
                for path, amount in inc.items():
                    parent, leaf = _walk(doc, path)
                    parent[leaf] = parent.get(leaf, 0) + amount

    async def sum_by(
        self, collection: str, where: Where, group_by: str, fields: Sequence[str]
    ) -> dict[Any, dict[str, float]]:
        out: dict[Any, dict[str, float]] = {}
        for doc in self._coll(collection).values():
            if matches(doc, where):
                row = out.setdefault(doc.get(group_by), dict.fromkeys(fields, 0.0))
                for f in fields:
                    row[f] += doc.get(f) or 0
        return out

    async def unset_everywhere(self, collection: str, paths: Sequence[str]) -> int:
        changed = 0
        for doc in self._coll(collection).values():
            found = False
            for path in paths:
                *parents, leaf = path.split(".")
                parent: Any = doc
                for part in parents:
                    parent = parent.get(part) if isinstance(parent, dict) else None
                if isinstance(parent, dict) and leaf in parent:
                    del parent[leaf]
                    found = True
            changed += found
        return changed

    # One process alone uses this store: no other instance to tell of changes.

    async def note_change(self, kind: str, id: str | None) -> None:
        return None

    async def read_changes(self) -> dict[str, Doc]:
        return {}

    async def wait_for_change(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
