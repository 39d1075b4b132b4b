"""The storage protocol every part of the gateway uses.

It is deliberately small: documents are plain dicts keyed by ``_id``; filters are
equality plus the range/set operators below; counters are atomic ``$inc`` upserts.
That is the subset that behaves identically on MongoDB, on the jongodb test server and
in memory, and it is what scales (pre-aggregated rollups instead of ad-hoc queries).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

Doc = dict[str, Any]
#: Filter: {"field": value} for equality, or {"field": {"$gte"|"$gt"|"$lte"|"$lt"|"$in"|"$ne": v}}
Where = Mapping[str, Any]

#: Fields with a unique index, per collection. Both stores enforce these.
UNIQUE_FIELDS: dict[str, tuple[str, ...]] = {
    "keys": ("hash",),
    "providers": ("name",),
}
#: Collections kept for the log retention period (by their ``created_at``): MongoDB expires
#: them with a TTL index, the in-process store keeps the newest of each.
RETAINED = ("request_logs", "responses", "response_events")
FILTER_OPERATORS = frozenset({"$gte", "$gt", "$lte", "$lt", "$in", "$ne"})
#: Where documents keep each writer's last batch (``increment_many``'s ``once``).
SETTLED = "settled"
#: Data migrations done on this store, one document each (by name). Not exported with the
#: state (transfer.py): they describe this store's documents, not another's.
MIGRATIONS = "migrations"
#: The change counters: one document per kind of admin data ({_id: kind, n, at, id}),
#: bumped by every admin write so that other instances drop what they cached of it.
CHANGES = "changes"


class DuplicateError(Exception):
    """An insert or update would break a unique field (or reuse an ``_id``)."""

    def __init__(self, collection: str, field: str) -> None:
        super().__init__(f"duplicate {field} in {collection}")
        self.collection = collection
        self.field = field


class StoreUnavailable(Exception):
    """The store could not be reached, or did not answer in time: an outage, not a bug.
    Requests that need the store are answered 503; background writes try again later."""


def log_failure(logger: logging.Logger, exc: BaseException, message: str, *args: Any) -> None:
    """A background store write failed: an outage as one warning line (it repeats while
    the outage lasts, and its cause is elsewhere), anything else with its traceback."""
    if isinstance(exc, StoreUnavailable):
        logger.warning(message + ": %s", *args, exc)
    else:
        logger.error(message, *args, exc_info=exc)


class Store(Protocol):
    kind: str
    persistent: bool

    async def start(self) -> None:
        """Connect and ensure indexes."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the store cannot serve requests."""

    async def insert(self, collection: str, doc: Doc) -> None: ...

    async def insert_many(self, collection: str, docs: Sequence[Doc]) -> None:
        """Insert a batch. A duplicate ``_id`` raises DuplicateError; which of the other
        documents were written is then unspecified (jongodb stops, mongod carries on)."""

    async def get(
        self, collection: str, id: str, fields: Sequence[str] | None = None
    ) -> Doc | None:
        """One document by id; with ``fields``, only those (and ``_id``)."""

    async def find_one(self, collection: str, where: Where) -> Doc | None: ...

    async def find(
        self,
        collection: str,
        where: Where,
        *,
        sort: str = "_id",
        descending: bool = False,
        offset: int = 0,
        limit: int = 100,
    ) -> list[Doc]: ...

    async def count(self, collection: str, where: Where) -> int: ...

    async def update(
        self,
        collection: str,
        id: str,
        set: Mapping[str, Any] | None = None,
        unset: Sequence[str] = (),
        *,
        where: Where | None = None,
    ) -> Doc | None:
        """Set/unset fields of one document (optionally only if it also matches ``where``);
        return it as updated, or None if no document matched."""

    async def delete(self, collection: str, id: str) -> bool: ...

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
        """Atomically add to counters (dotted paths reach into sub-documents), optionally
        setting fields too, on the document with ``id`` that also matches ``where``; create
        it if asked. Return it as updated, or None if nothing matched; with
        ``returning=False`` an empty dict stands for "matched" (cheaper: no copy, and a
        plain update on MongoDB), and with a list of field names only those come back."""

    async def increment_many(
        self,
        collection: str,
        changes: Mapping[str, Mapping[str, float | int]],
        *,
        once: tuple[str, int] | None = None,
    ) -> None:
        """Add to counters of several existing documents ({id: {path: amount}}), each
        change atomic, all in one round trip; ids with no document are skipped.

        ``once=(writer, batch)``: a document takes a batch at most once (it keeps the
        writer's last batch number under ``settled``), so a batch whose outcome was
        unknown (a timeout) can be sent again as it was without counting twice."""

    async def sum_by(
        self, collection: str, where: Where, group_by: str, fields: Sequence[str]
    ) -> dict[Any, dict[str, float]]:
        """Sum ``fields`` over matching documents grouped by one field."""

    async def unset_everywhere(self, collection: str, paths: Sequence[str]) -> int:
        """Remove these (dotted) fields from every document of the collection that has
        any of them; return how many documents changed (pruning a dead instance's
        entries: see admission/pruning.py)."""

    # -- the change feed (store/changes.py) -----------------------------------------------

    async def note_change(self, kind: str, id: str | None) -> None:
        """Admin data of ``kind`` changed (``id``: the document, if one): bump its change
        counter, for the other instances sharing the store. A no-op in memory: no other
        instance can see that store."""

    async def read_changes(self) -> dict[str, Doc]:
        """The change counters by kind ({} in memory)."""

    async def wait_for_change(self, seconds: float) -> None:
        """Return once a change counter may have moved, at the latest after ``seconds``:
        MongoDB on a replica set is told by a change stream; elsewhere this only waits,
        and the caller polls the counters."""
