"""MongoDB store on PyMongo's native async API (Motor is deprecated; see README)."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import UTC
from typing import Any, Concatenate, ParamSpec, TypeVar

import pymongo
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument, UpdateOne
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
)

from .base import CHANGES, RETAINED, UNIQUE_FIELDS, Doc, DuplicateError, StoreUnavailable, Where
from .changes import bump, counters
from .once_writes import marks

log = logging.getLogger("conduit.store")
INDEX_BUILD_SECONDS = 600.0  # start-up index builds: not bound by CONDUIT_MONGODB_TIMEOUT

# Secondary indexes the queries rely on (unique ones come from UNIQUE_FIELDS).
_INDEXES: dict[str, list[list[tuple[str, int]]]] = {
    "keys": [[("group", ASCENDING)], [("created_at", DESCENDING)]],
    "request_logs": [
        [("key_id", ASCENDING), ("created_at", DESCENDING)],
        [("model", ASCENDING), ("created_at", DESCENDING)],
    ],
    "usage": [[("key_id", ASCENDING), ("day", ASCENDING)], [("day", ASCENDING)]],
    # A conversation's items in order (find sorts by seq, then _id); the calls an output
    # answers, the outputs of a call (api/conversations.py).
    "conversation_items": [
        [("conversation", ASCENDING), ("seq", ASCENDING), ("_id", ASCENDING)],
        [("conversation", ASCENDING), ("call", ASCENDING)],
        [("conversation", ASCENDING), ("output_of", ASCENDING)],
    ],
}


def _duplicate_field(collection: str, exc: DuplicateKeyError | BulkWriteError) -> str:
    text = str(exc)
    for field in UNIQUE_FIELDS.get(collection, ()):
        if field in text:
            return field
    return "_id"


P = ParamSpec("P")
R = TypeVar("R")
BREAK_SECONDS = 1.0  # how long operations fail at once after the server was unreachable


class _Breaker:
    """Fails operations at once while the server is known to be unreachable, so that
    requests do not each wait out the timeout: after a connection failure, for
    BREAK_SECONDS; then one operation goes through to find out, the others still failing
    at once until it has."""

    def __init__(self) -> None:
        self._open_until = 0.0  # 0: closed, the usual case
        self._probing = False

    def check(self) -> None:
        if not self._open_until:
            return
        if self._probing or time.monotonic() < self._open_until:
            raise StoreUnavailable("MongoDB: unreachable moments ago; not tried again yet")
        self._probing = True

    def record(self, unreachable: bool | None) -> None:
        """How an operation ended: the server unreachable, answering, or None: unknown."""
        if unreachable:
            self._open_until = time.monotonic() + BREAK_SECONDS
        elif unreachable is not None and self._open_until:
            self._open_until = 0.0
        self._probing = False


def _outages(
    method: Callable[Concatenate[MongoStore, P], Awaitable[R]],
) -> Callable[Concatenate[MongoStore, P], Coroutine[Any, Any, R]]:
    """Raise an unreachable or slow server as StoreUnavailable, which callers treat as an
    outage (503, retry later) rather than as a bug. Only a connection failure opens the
    breaker: a query over its time limit says nothing about the server."""

    @functools.wraps(method)
    async def call(store: MongoStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        store.breaker.check()
        try:
            result = await method(store, *args, **kwargs)
        except PyMongoError as exc:
            unreachable = isinstance(exc, ConnectionFailure)
            store.breaker.record(unreachable)
            if unreachable or exc.timeout:
                raise StoreUnavailable(f"MongoDB: {exc}") from exc
            raise
        except BaseException:
            store.breaker.record(None)  # cancelled, say: no news of the server
            raise
        store.breaker.record(False)
        return result

    return call


def _projection(fields: Sequence[str] | None) -> dict[str, bool] | None:
    return dict.fromkeys(fields, True) if fields is not None else None


def _only(doc: Doc | None, fields: Sequence[str] | None) -> Doc | None:
    # Projections save transfer on mongod; the jongodb test server ignores them, so the
    # contract (only these fields) is kept here as well.
    if doc is None or fields is None:
        return doc
    return {k: v for k, v in doc.items() if k == "_id" or k in fields}


class MongoStore:
    kind = "mongodb"
    persistent = True

    def __init__(
        self, uri: str, database: str, *, log_retention_days: int = 30, timeout: float = 5.0
    ) -> None:
        # Created here but connects lazily on first use, i.e. on the running loop. Every
        # operation has a deadline (timeoutMS), so a server that hangs cannot hang requests.
        millis = max(1, round(timeout * 1000))
        self._client: AsyncMongoClient[Doc] = AsyncMongoClient(
            uri,
            tz_aware=True,
            tzinfo=UTC,
            timeoutMS=millis,
            serverSelectionTimeoutMS=millis,
            appname="conduit-tornado",
        )
        self._db = self._client[database]
        self.database = database
        self._retention = log_retention_days
        self.breaker = _Breaker()
        self._timeout = timeout
        self.replica_set: bool | None = None  # known after the first wait_for_change
        self._stream: Any = None  # the change stream on CHANGES, once opened

    @_outages
    async def start(self) -> None:
        await self.ping()  # an unreachable server fails within the usual timeout
        # Building an index on a large existing collection can take minutes.
        with pymongo.timeout(INDEX_BUILD_SECONDS):
            await self._ensure_indexes()

    async def _ensure_indexes(self) -> None:
        for collection, fields in UNIQUE_FIELDS.items():
            for field in fields:
                await self._db[collection].create_index(field, unique=True)
        for collection, indexes in _INDEXES.items():
            for keys in indexes:
                await self._db[collection].create_index(keys)
        # TTL indexes (a real mongod expires documents; the jongodb test server accepts
        # them and never does): window counters go when their window ends, request logs
        # after the retention period (0 keeps them).
        await self._ttl("limit_windows", "expires_at", 0)
        for collection in RETAINED:
            if self._retention > 0:
                await self._ttl(collection, "created_at", self._retention * 86_400)
            else:
                await self._db[collection].create_index([("created_at", DESCENDING)])

    async def _ttl(self, collection: str, field: str, seconds: int) -> None:
        try:
            await self._db[collection].create_index(
                [(field, DESCENDING)], expireAfterSeconds=seconds
            )
        except OperationFailure as exc:  # an index with other options exists (retention changed)
            log.warning(
                "%s.%s has an index with other options (%s); drop it to apply a retention of %ss",
                collection,
                field,
                exc.code,
                seconds,
            )

    async def close(self) -> None:
        # Closing ends the server sessions with a command: bounded like any operation.
        with pymongo.timeout(self._timeout):
            if self._stream is not None:
                stream, self._stream = self._stream, None
                await stream.close()
            await self._client.close()

    @_outages
    async def ping(self) -> None:
        await self._db.command("ping")

    @_outages
    async def insert(self, collection: str, doc: Doc) -> None:
        try:
            await self._db[collection].insert_one(dict(doc))
        except DuplicateKeyError as exc:
            raise DuplicateError(collection, _duplicate_field(collection, exc)) from exc

    @_outages
    async def insert_many(self, collection: str, docs: Sequence[Doc]) -> None:
        if not docs:
            return
        try:
            await self._db[collection].insert_many([dict(d) for d in docs], ordered=False)
        except DuplicateKeyError as exc:  # jongodb's answer
            raise DuplicateError(collection, _duplicate_field(collection, exc)) from exc
        except BulkWriteError as exc:  # mongod's: duplicates only, or something else too
            errors = exc.details.get("writeErrors") or []
            if errors and all(e.get("code") == 11000 for e in errors):
                raise DuplicateError(collection, _duplicate_field(collection, exc)) from exc
            raise

    @_outages
    async def get(
        self, collection: str, id: str, fields: Sequence[str] | None = None
    ) -> Doc | None:
        doc = await self._db[collection].find_one({"_id": id}, _projection(fields))
        return _only(doc, fields)

    @_outages
    async def find_one(self, collection: str, where: Where) -> Doc | None:
        return await self._db[collection].find_one(dict(where))

    @_outages
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
        direction = DESCENDING if descending else ASCENDING
        order = [(sort, direction)] + ([("_id", direction)] if sort != "_id" else [])
        cursor = self._db[collection].find(dict(where)).sort(order).skip(offset).limit(limit)
        return [doc async for doc in cursor]

    @_outages
    async def count(self, collection: str, where: Where) -> int:
        return await self._db[collection].count_documents(dict(where))

    @_outages
    async def update(
        self,
        collection: str,
        id: str,
        set: Mapping[str, Any] | None = None,
        unset: Sequence[str] = (),
        *,
        where: Where | None = None,
    ) -> Doc | None:
        change: dict[str, Any] = {}
        if set:
            change["$set"] = dict(set)
        if unset:
            change["$unset"] = dict.fromkeys(unset, "")
        query = {**dict(where or {}), "_id": id}
        if not change:
            return await self._db[collection].find_one(query)
        try:
            return await self._db[collection].find_one_and_update(
                query, change, return_document=ReturnDocument.AFTER
            )
        except DuplicateKeyError as exc:
            raise DuplicateError(collection, _duplicate_field(collection, exc)) from exc

    @_outages
    async def delete(self, collection: str, id: str) -> bool:
        result = await self._db[collection].delete_one({"_id": id})
        return result.deleted_count == 1

    @_outages
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
        change: dict[str, Any] = {"$inc": dict(inc)}
        if set_on_insert:
            change["$setOnInsert"] = dict(set_on_insert)
        if set:
            change["$set"] = dict(set)
        query = {**dict(where or {}), "_id": id}
        coll = self._db[collection]
        for attempt in range(2):
            try:
                if not returning:
                    result = await coll.update_one(query, change, upsert=upsert and attempt == 0)
                    return {} if result.matched_count or result.upserted_id is not None else None
                fields = None if returning is True else returning
                doc = await coll.find_one_and_update(
                    query,
                    change,
                    projection=_projection(fields),
                    upsert=upsert and attempt == 0,
                    return_document=ReturnDocument.AFTER,
                )
                return _only(doc, fields)
            except DuplicateKeyError:
                continue  # two upserts raced to create it: the loser retries as an update
        return None

    @_outages
    async def increment_many(
        self,
        collection: str,
        changes: Mapping[str, Mapping[str, float | int]],
        *,
        once: tuple[str, int] | None = None,
    ) -> None:
        if not changes:
            return
        mark, fresh = marks(once)
        change: dict[str, Any] = {"$set": mark} if mark else {}
        updates = [
            UpdateOne({"_id": id, **fresh}, {"$inc": dict(inc), **change})
            for id, inc in changes.items()
        ]
        await self._db[collection].bulk_write(updates, ordered=False)

    @_outages
    async def sum_by(
        self, collection: str, where: Where, group_by: str, fields: Sequence[str]
    ) -> dict[Any, dict[str, float]]:
        group: dict[str, Any] = {"_id": f"${group_by}"}
        group.update({f: {"$sum": f"${f}"} for f in fields})
        cursor = await self._db[collection].aggregate([{"$match": dict(where)}, {"$group": group}])
        return {row.pop("_id"): row async for row in cursor}

    @_outages
    async def unset_everywhere(self, collection: str, paths: Sequence[str]) -> int:
        if not paths:
            return 0
        result = await self._db[collection].update_many(
            {"$or": [{p: {"$exists": True}} for p in paths]},
            {"$unset": dict.fromkeys(paths, "")},
        )
        return result.modified_count

    # -- the change feed (store/changes.py) -----------------------------------------------

    async def note_change(self, kind: str, id: str | None) -> None:
        await bump(self, kind, id)

    async def read_changes(self) -> dict[str, Doc]:
        return await counters(self)

    @_outages
    async def _is_replica_set(self) -> bool:
        hello = await self._db.command("hello")
        return bool(hello.get("setName"))

    async def wait_for_change(self, seconds: float) -> None:
        """On a replica set, a change stream on the counters wakes the caller as soon as
        one is bumped (standalone servers, and the jongodb test server, have none: there
        the caller polls). Untested here: jongodb is not a replica set."""
        if self.replica_set is None:
            self.replica_set = await self._is_replica_set()
        if not self.replica_set:
            await asyncio.sleep(seconds)
            return
        try:
            await self._next_change(seconds)
        except StoreUnavailable:
            await self._drop_stream()
            raise
        except PyMongoError as exc:  # the stream broke (failover, say): a new one next time
            await self._drop_stream()
            raise StoreUnavailable(f"MongoDB change stream: {exc}") from exc

    async def _next_change(self, seconds: float) -> None:
        # The server holds each getMore up to max_await_time_ms; the operation's own
        # deadline must exceed it (PyMongo refuses an await time past timeoutMS).
        wait_ms = max(1, round(seconds * 1000))
        with pymongo.timeout(seconds + self._timeout):
            if self._stream is None:
                self._stream = await self._db[CHANGES].watch(max_await_time_ms=wait_ms)
            await self._stream.try_next()

    async def _drop_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                with pymongo.timeout(self._timeout):
                    await stream.close()
            except PyMongoError:
                pass  # it is broken already
