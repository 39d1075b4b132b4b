# ruff: noqa: S608
# (SQL is built from table names and field paths checked against _NAME and _PATH_PART;
# every value goes in as a parameter.)
"""The local store: one SQLite file (the standard library's sqlite3, in WAL mode).

The default when no MongoDB is configured, so that a gateway started on one machine
keeps its keys, providers, usage and master key across restarts.

Threading. Every sqlite3 call runs on one worker thread that owns the only connection;
coroutines queue jobs for it and await their futures (``_Worker``). A query may wait for
another process's write lock or a checkpoint, and none of that may stall the event loop.

Layout. A table per collection, ``c_<name>(id PRIMARY KEY, doc TEXT)``, the document as
JSON. Datetimes are stored as tagged strings (``"\\x01D" + UTC ISO text``, which sort in
time order) and strings that begin with the tag are escaped, so filters, sorting and
indexes work in SQL through ``json_extract``. A filter SQL cannot express (an operand
that is a list or document) is applied in Python to every document of the collection.

Atomicity. Each write is one transaction begun IMMEDIATE (it takes the file's write lock
at once), so a read-modify-write such as a conditional increment is atomic against the
other connections, in this process or another: several gateways may share one file and
the limits stay as exact as on MongoDB (SQLite serialises their writes). Commits do not
fsync (``synchronous=NORMAL`` in WAL mode): a killed process loses nothing it committed;
a power cut may lose the last commits before a checkpoint.

Bounds. Ended limit windows are dropped as new ones open (what MongoDB's TTL index does),
request logs past the retention or beyond ``max_logs`` are deleted as new ones arrive, and
the WAL file is truncated after checkpoints; deleted pages are reused, so the file stops
growing once the data does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import queue
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson

from .base import (
    FILTER_OPERATORS,
    SETTLED,
    UNIQUE_FIELDS,
    Doc,
    DuplicateError,
    StoreUnavailable,
    Where,
)
from .changes import bump, counters
from .memory import matches

T = TypeVar("T")
SCHEMA_VERSION = 1
FILE_NAME = "conduit.sqlite3"
BUSY_SECONDS = 5.0  # longest wait for another connection's write lock
SWEEP_CHUNK = 5_000  # most documents one sweep deletes (bounds one transaction)
_GRACE = timedelta(days=1)  # the longest window (a day): see MemoryStore._expire
_WINDOW_SWEEP = timedelta(minutes=1)  # sweep ended windows once per minute of window ends

_TAG = "\x01"
_DATE = "\x01D"
_ESCAPED = "\x01S"
_TAG_JSON = "\\u0001"  # how json.dumps writes the tag character
_NAME = re.compile(r"[A-Za-z0-9_]{1,64}\Z")
_PATH_PART = re.compile(r"[^\"'.\\\x00-\x1f]+\Z")

#: Secondary indexes, as MongoStore's: the admin listings and usage queries use them.
_INDEXES: dict[str, list[tuple[str, ...]]] = {
    "keys": [("group",), ("created_at",)],
    "request_logs": [("key_id", "created_at"), ("model", "created_at"), ("created_at",)],
    "usage": [("key_id", "day"), ("day",)],
    "limit_windows": [("expires_at",)],
    # A conversation's items in order; the calls an output answers, the outputs of a call
    # (api/conversations.py).
    "conversation_items": [
        ("conversation", "seq"),
        ("conversation", "call"),
        ("conversation", "output_of"),
    ],
}
_UNAVAILABLE = frozenset(
    {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_IOERR", "SQLITE_CANTOPEN"}
    | {"SQLITE_PROTOCOL", "SQLITE_READONLY", "SQLITE_NOMEM", "SQLITE_NOTADB"}
)


class _NoSQL(Exception):
    """A filter or sort SQL cannot express here: it is applied in Python instead."""


# -- encoding -------------------------------------------------------------------------------


def _date_text(value: datetime) -> str:
    if value.tzinfo is not UTC and value.tzinfo is not None:
        value = value.astimezone(UTC)  # stored in UTC; naive ones are UTC (as on MongoDB)
    return _DATE + value.replace(tzinfo=None).isoformat(timespec="microseconds")


def _escape(value: Any) -> Any:
    if isinstance(value, str):
        return _ESCAPED + value[1:] if value.startswith(_TAG) else value
    if isinstance(value, dict):
        return {k: _escape(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_escape(v) for v in value]
    return value


class _Encoder:
    """Documents as JSON text (orjson: the gateway's JSON library, several times faster
    than the standard one here). Datetimes become tagged strings; a string that already
    begins with the tag is escaped. Escaping needs a walk over the document, which is
    only done when the text shows a tag character that no datetime accounts for.

    One per thread: it counts the datetimes of the document being encoded."""

    _OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME  # datetimes go to _default, to be tagged

    def __init__(self) -> None:
        self._dates = 0

    def _default(self, value: Any) -> str:
        if isinstance(value, datetime):
            self._dates += 1
            return _date_text(value)
        raise TypeError(f"the local store cannot hold a {type(value).__name__}")

    def __call__(self, doc: Mapping[str, Any]) -> str:
        self._dates = 0
        text = orjson.dumps(doc, default=self._default, option=self._OPTIONS).decode()
        if text.count(_TAG_JSON) != self._dates:
            raw = orjson.dumps(_escape(doc), default=self._default, option=self._OPTIONS)
            text = raw.decode()
        return text


def dumps(doc: Mapping[str, Any]) -> str:
    """A document as the store writes it (see _Encoder)."""
    return _Encoder()(doc)


def _untag(value: str) -> Any:
    if value.startswith(_DATE):
        return datetime.fromisoformat(value[2:]).replace(tzinfo=UTC)
    if value.startswith(_ESCAPED):
        return _TAG + value[2:]
    return value


def _decode_in(container: dict[str, Any] | list[Any]) -> None:
    """Untag, in place, the tagged strings of a document just parsed (nothing else holds
    it); only containers are walked into, and only strings that begin with the tag change."""
    items = container.items() if isinstance(container, dict) else enumerate(container)
    for key, value in items:
        kind = type(value)
        if kind is str:
            if value.startswith(_TAG):
                container[key] = _untag(value)  # type: ignore[index]
        elif kind is dict or kind is list:
            _decode_in(value)


def loads(text: str) -> Doc:
    doc: Doc = orjson.loads(text)
    if _TAG_JSON in text:
        _decode_in(doc)
    return doc


def _param(value: Any) -> Any:
    """A filter operand as SQL compares it with ``json_extract``'s result."""
    if isinstance(value, str):
        return _ESCAPED + value[1:] if value.startswith(_TAG) else value
    if isinstance(value, datetime):
        return _date_text(value)
    if isinstance(value, bool):
        return int(value)  # json_extract reads true/false as 1/0
    if value is None or isinstance(value, int | float):
        return value
    raise _NoSQL


def _same(value: Any) -> Any:
    return value


def _field(name: str) -> str:
    """The SQL expression for a (dotted) field of the document."""
    if name == "_id":
        return "id"
    parts = name.split(".")
    if not all(_PATH_PART.match(p) for p in parts):
        raise _NoSQL
    return "json_extract(doc, '$." + ".".join(f'"{p}"' for p in parts) + "')"


_COMPARE = {"$gte": ">=", "$gt": ">", "$lte": "<=", "$lt": "<"}


def _where(where: Where) -> tuple[str, list[Any]]:
    """A filter as a SQL condition and its parameters (MemoryStore's semantics: a missing
    field equals None and never satisfies a range)."""
    clauses: list[str] = []
    params: list[Any] = []
    for name, cond in where.items():
        expr = _field(name)
        param = _param if expr != "id" else _same  # ids are stored as they are
        if type(cond) is dict and cond and all(str(k).startswith("$") for k in cond):
            for op, arg in cond.items():
                if op not in FILTER_OPERATORS:
                    raise ValueError(f"unsupported filter operator {op}")
                if op == "$in":
                    values = list(arg)
                    present = [param(v) for v in values if v is not None]
                    alternatives = [f"{expr} IS NULL"] if None in values else []
                    if present:
                        alternatives.append(f"{expr} IN ({','.join('?' * len(present))})")
                        params.extend(present)
                    clauses.append("(" + " OR ".join(alternatives) + ")" if alternatives else "0")
                elif op == "$ne":
                    clauses.append(f"{expr} IS NOT ?")
                    params.append(param(arg))
                else:
                    if arg is None:
                        raise _NoSQL
                    clauses.append(f"{expr} {_COMPARE[op]} ?")
                    params.append(param(arg))
        elif cond is None:
            clauses.append(f"{expr} IS NULL")
        else:
            clauses.append(f"{expr} = ?")
            params.append(param(cond))
    return (" AND ".join(clauses) or "1"), params


def _walk(doc: Doc, path: str) -> tuple[Doc, str]:
    """The sub-document holding a dotted path's last part, created as needed."""
    if "." not in path:
        return doc, path
    *parents, leaf = path.split(".")
    for part in parents:
        doc = doc.setdefault(part, {})
    return doc, leaf


def _copy(value: Any) -> Any:
    """A copy of a value's containers: what a caller passes in is never shared with a
    document this store returns (or mutated by an increment into it)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _only(doc: Doc, fields: Sequence[str]) -> Doc:
    return {k: doc[k] for k in ("_id", *fields) if k in doc}


def _sort_key(sort: str) -> Callable[[Doc], tuple[bool, Any, Any]]:
    def key(doc: Doc) -> tuple[bool, Any, Any]:
        value: Any = doc
        for part in sort.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return (value is not None, value, doc["_id"])

    return key


@functools.cache  # a handful of collections, named on every call
def _table_name(collection: str) -> str:
    if not _NAME.match(collection):
        raise ValueError(f"invalid collection name {collection!r}")
    return f'"c_{collection}"'


def select(
    collection: str, where: Where, sort: str = "_id", descending: bool = False
) -> tuple[str, list[Any]]:
    """The query ``find`` runs, less its LIMIT and OFFSET, and its parameters (what
    EXPLAIN QUERY PLAN is asked of, to see that an index answers it). Raises _NoSQL for a
    filter or sort SQL cannot express."""
    condition, params = _where(where)
    order = "DESC" if descending else "ASC"
    by = _field(sort)
    ordering = f"{by} {order}" + (f", id {order}" if by != "id" else "")
    table = _table_name(collection)
    return f"SELECT doc FROM {table} WHERE {condition} ORDER BY {ordering}", params


def default_data_dir() -> Path:
    """Where a user's application data goes on this platform."""
    home = Path.home()
    if os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif os.uname().sysname == "Darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    return base / "conduit-tornado"


# -- the worker thread ----------------------------------------------------------------------

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]
_Result = tuple["asyncio.Future[Any]", bool, Any]


def _settle(results: list[_Result]) -> None:
    for future, ok, value in results:
        if future.cancelled():  # its caller gave up; the work was done all the same
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class _Worker:
    """One thread running jobs in order. Lighter than a one-thread ThreadPoolExecutor
    awaited with run_in_executor: a job is a tuple on a SimpleQueue, no
    concurrent.futures.Future is chained to an asyncio one, and the jobs that queued up
    meanwhile are answered together with one wake-up of the event loop."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], args: tuple[Any, ...]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, future, fn, args))
        return future

    def stop(self) -> None:
        """End the thread once the jobs queued before this have run."""
        self._jobs.put(None)

    def _serve(self) -> None:
        while True:
            jobs = [self._jobs.get()]
            with contextlib.suppress(queue.Empty):
                while len(jobs) < 64:
                    jobs.append(self._jobs.get_nowait())
            answers: dict[asyncio.AbstractEventLoop, list[_Result]] = {}
            for job in jobs:
                if job is None:
                    continue
                loop, future, fn, args = job
                try:
                    result: _Result = (future, True, fn(*args))
                except BaseException as exc:  # handed to the caller, whatever it is
                    result = (future, False, exc)
                answers.setdefault(loop, []).append(result)
            for loop, results in answers.items():
                with contextlib.suppress(RuntimeError):  # that loop has closed meanwhile
                    loop.call_soon_threadsafe(_settle, results)
            if None in jobs:
                return


# -- the store ------------------------------------------------------------------------------


class SQLiteStore:
    kind = "local"
    persistent = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        log_retention_days: int = 30,
        max_logs: int = 1_000_000,
        busy_timeout: float = BUSY_SECONDS,
    ) -> None:
        self.path = Path(path)
        self._retention = timedelta(days=log_retention_days) if log_retention_days > 0 else None
        self._max_logs = max_logs
        self._busy = busy_timeout
        self._worker: _Worker | None = None
        self._dumps = _Encoder()  # used on the worker thread only
        self._db: sqlite3.Connection | None = None  # used on the worker thread only
        self._tables: set[str] = set()
        self._windows_swept: datetime | None = None
        self._logs_swept: datetime | None = None

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    # -- plumbing ---------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._worker is None:
            raise StoreUnavailable("local store: not open")
        return await self._worker.submit(self._call, (fn, args))

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            return fn(*args)
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            name = getattr(exc, "sqlite_errorname", "") or ""
            if "_".join(name.split("_")[:2]) in _UNAVAILABLE or self._db is None:
                raise StoreUnavailable(f"local store ({self.path}): {exc}") from exc
            raise

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreUnavailable("local store: closed")
        return self._db

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding the file's write lock from its start."""
        db = self._conn
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _table(self, collection: str) -> str:
        """The table of a collection, created (with its indexes) on first use."""
        table = _table_name(collection)
        if collection in self._tables:
            return table
        db = self._conn
        statements = [f"CREATE TABLE IF NOT EXISTS {table} (id NOT NULL PRIMARY KEY, doc TEXT)"]
        for field in UNIQUE_FIELDS.get(collection, ()):
            statements.append(
                f'CREATE UNIQUE INDEX IF NOT EXISTS "u_{collection}_{field}" '
                f"ON {table}({_field(field)})"
            )
        for n, fields in enumerate(_INDEXES.get(collection, ())):
            columns = ", ".join([*(_field(f) for f in fields), "id"])
            statements.append(
                f'CREATE INDEX IF NOT EXISTS "i_{collection}_{n}" ON {table}({columns})'
            )
        if db.in_transaction:  # called inside a write: the lock is held already
            for statement in statements:
                db.execute(statement)
        else:
            with self._write():
                for statement in statements:
                    db.execute(statement)
        self._tables.add(collection)
        return table

    def _duplicate(self, collection: str, exc: sqlite3.IntegrityError) -> DuplicateError:
        text = str(exc)
        for field in UNIQUE_FIELDS.get(collection, ()):
            if f"u_{collection}_{field}" in text:
                return DuplicateError(collection, field)
        return DuplicateError(collection, "_id")

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self._worker is not None:
            return
        self._worker = _Worker("conduit-sqlite")
        try:
            await self._run(self._open)
        except BaseException:
            self._worker.stop()
            self._worker = None
            raise

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Created private: it holds key hashes and encrypted provider credentials
            # (SQLite gives its -wal and -shm files the same permissions).
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:
            raise StoreUnavailable(f"local store: cannot open {self.path}: {exc}") from exc
        db = sqlite3.connect(
            self.path, timeout=self._busy, isolation_level=None, check_same_thread=False
        )
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreUnavailable(
                    f"local store: {self.path} cannot use WAL mode (a network file system?); "
                    "put CONDUIT_DATA_DIR on a local disk, or use MongoDB"
                )
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA journal_size_limit=67108864")  # WAL truncated to 64 MiB
            # Pages read through a memory map and a larger cache: fewer system calls for
            # the index pages every batch of request logs touches.
            db.execute("PRAGMA mmap_size=268435456")
            db.execute("PRAGMA cache_size=-16384")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreUnavailable(
                    f"local store: {self.path} was written by a newer conduit-tornado "
                    f"(format {version}; this one reads {SCHEMA_VERSION})"
                )
            if version == 0:
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            db.close()
            raise
        self._db = db

    async def close(self) -> None:
        worker = self._worker
        if worker is None:
            return
        try:
            await self._run(self._close)
        finally:
            self._worker = None
            worker.stop()

    def _close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.execute("PRAGMA optimize")
            db.close()

    async def ping(self) -> None:
        await self._run(self._ping)

    def _ping(self) -> None:
        self._conn.execute("SELECT 1").fetchone()

    # -- reads ------------------------------------------------------------------------------

    async def get(
        self, collection: str, id: str, fields: Sequence[str] | None = None
    ) -> Doc | None:
        return await self._run(self._get, collection, id, fields)

    def _get(self, collection: str, id: str, fields: Sequence[str] | None) -> Doc | None:
        table = self._table(collection)
        row = self._conn.execute(f"SELECT doc FROM {table} WHERE id = ?", (id,)).fetchone()
        if row is None:
            return None
        doc = loads(row[0])
        return doc if fields is None else _only(doc, fields)

    async def find_one(self, collection: str, where: Where) -> Doc | None:
        found = await self._run(self._find, collection, where, "_id", False, 0, 1)
        return found[0] if found else None

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
        return await self._run(self._find, collection, where, sort, descending, offset, limit)

    def _find(
        self, collection: str, where: Where, sort: str, descending: bool, offset: int, limit: int
    ) -> list[Doc]:
        table = self._table(collection)
        try:
            query, params = select(collection, where, sort, descending)
        except _NoSQL:
            found = self._scan(table, where)
            found.sort(key=_sort_key(sort), reverse=descending)
            return found[offset : offset + limit]
        rows = self._conn.execute(f"{query} LIMIT ? OFFSET ?", (*params, limit, offset))
        return [loads(text) for (text,) in rows]

    def _scan(self, table: str, where: Where) -> list[Doc]:
        docs = (loads(text) for (text,) in self._conn.execute(f"SELECT doc FROM {table}"))
        return [d for d in docs if matches(d, where)]

    async def count(self, collection: str, where: Where) -> int:
        return await self._run(self._count, collection, where)

    def _count(self, collection: str, where: Where) -> int:
        table = self._table(collection)
        try:
            condition, params = _where(where)
        except _NoSQL:
            return len(self._scan(table, where))
        row = self._conn.execute(f"SELECT count(*) FROM {table} WHERE {condition}", params)
        return int(row.fetchone()[0])

    async def sum_by(
        self, collection: str, where: Where, group_by: str, fields: Sequence[str]
    ) -> dict[Any, dict[str, float]]:
        return await self._run(self._sum_by, collection, where, group_by, list(fields))

    def _sum_by(
        self, collection: str, where: Where, group_by: str, fields: list[str]
    ) -> dict[Any, dict[str, float]]:
        table = self._table(collection)
        out: dict[Any, dict[str, float]] = {}
        try:
            condition, params = _where(where)
            sums = ", ".join(f"total({_field(f)})" for f in fields)
            group = _field(group_by)
        except _NoSQL:
            for doc in self._scan(table, where):
                row = out.setdefault(doc.get(group_by), dict.fromkeys(fields, 0.0))
                for f in fields:
                    row[f] += doc.get(f) or 0
            return out
        rows = self._conn.execute(
            f"SELECT {group}, {sums} FROM {table} WHERE {condition} GROUP BY 1", params
        )
        for group_value, *sums_row in rows:
            if isinstance(group_value, str) and group_value.startswith(_TAG):
                group_value = _untag(group_value)
            out[group_value] = dict(zip(fields, sums_row, strict=True))
        return out

    # -- writes -----------------------------------------------------------------------------

    async def insert(self, collection: str, doc: Doc) -> None:
        await self._run(self._insert_many, collection, [doc])

    async def insert_many(self, collection: str, docs: Sequence[Doc]) -> None:
        if docs:
            await self._run(self._insert_many, collection, list(docs))

    def _insert_many(self, collection: str, docs: list[Doc]) -> None:
        """Like mongod's unordered insert: every document that can be written is, and a
        duplicate among them is raised afterwards."""
        table = self._table(collection)
        duplicate: DuplicateError | None = None
        rows = [(doc["_id"], self._dumps(doc)) for doc in docs]
        with self._write() as db:
            for row in rows:
                try:
                    db.execute(f"INSERT INTO {table} (id, doc) VALUES (?, ?)", row)
                except sqlite3.IntegrityError as exc:
                    duplicate = duplicate or self._duplicate(collection, exc)
            if collection == "request_logs":
                self._sweep_logs(db, table, docs)
        if duplicate is not None:
            raise duplicate

    def _sweep_logs(self, db: sqlite3.Connection, table: str, docs: list[Doc]) -> None:
        """Keep request logs within the retention period and the count bound. The
        retention is measured from the newest log written (the gateway's clock, as the
        window ends are) rather than this machine's, once per minute of it."""
        db.execute(
            f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} "
            f"WHERE rowid <= (SELECT max(rowid) FROM {table}) - ? ORDER BY rowid LIMIT ?)",
            (self._max_logs, SWEEP_CHUNK),
        )
        if self._retention is None:
            return
        stamps = [d["created_at"] for d in docs if isinstance(d.get("created_at"), datetime)]
        if not stamps:
            return
        newest = max(stamps)
        if self._logs_swept is not None and newest - self._logs_swept < _WINDOW_SWEEP:
            return
        created = _field("created_at")
        deleted = db.execute(
            f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} "
            f"WHERE {created} < ? LIMIT ?)",
            (_date_text(newest - self._retention), SWEEP_CHUNK),
        ).rowcount
        if deleted < SWEEP_CHUNK:  # else more remain: sweep again with the next batch
            self._logs_swept = newest

    async def update(
        self,
        collection: str,
        id: str,
        set: Mapping[str, Any] | None = None,
        unset: Sequence[str] = (),
        *,
        where: Where | None = None,
    ) -> Doc | None:
        return await self._run(
            self._update, collection, id, _copy(dict(set or {})), list(unset), where
        )

    def _update(
        self,
        collection: str,
        id: str,
        set: dict[str, Any],
        unset: list[str],
        where: Where | None,
    ) -> Doc | None:
        table = self._table(collection)
        with self._write() as db:
            row = db.execute(f"SELECT doc FROM {table} WHERE id = ?", (id,)).fetchone()
            if row is None:
                return None
            doc = loads(row[0])
            if where is not None and not matches(doc, where):
                return None
            if not set and not unset:
                return doc
            for path, value in set.items():
                parent, leaf = _walk(doc, path)
                parent[leaf] = value
            for path in unset:
                parent, leaf = _walk(doc, path)
                parent.pop(leaf, None)
            text = self._dumps(doc)
            try:
                db.execute(f"UPDATE {table} SET doc = ? WHERE id = ?", (text, id))
            except sqlite3.IntegrityError as exc:
                raise self._duplicate(collection, exc) from exc
        return doc

    async def delete(self, collection: str, id: str) -> bool:
        return await self._run(self._delete, collection, id)

    def _delete(self, collection: str, id: str) -> bool:
        table = self._table(collection)
        with self._write() as db:
            return db.execute(f"DELETE FROM {table} WHERE id = ?", (id,)).rowcount > 0

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
        return await self._run(
            self._increment,
            collection,
            id,
            dict(inc),
            _copy(dict(set_on_insert or {})),
            _copy(dict(set or {})),
            where,
            upsert,
            returning if isinstance(returning, bool) else tuple(returning),
        )

    def _increment(
        self,
        collection: str,
        id: str,
        inc: dict[str, float | int],
        set_on_insert: dict[str, Any],
        set: dict[str, Any],
        where: Where | None,
        upsert: bool,
        returning: bool | tuple[str, ...],
    ) -> Doc | None:
        table = self._table(collection)
        with self._write() as db:
            row = db.execute(f"SELECT doc FROM {table} WHERE id = ?", (id,)).fetchone()
            if row is not None:
                doc = loads(row[0])
                if where is not None and not matches(doc, where):
                    return None  # exists but does not match: like MongoDB, no upsert over it
            elif not upsert:
                return None
            else:
                doc = {"_id": id, **set_on_insert}
            for path, value in set.items():
                parent, leaf = _walk(doc, path)
                parent[leaf] = value
            for path, amount in inc.items():
                parent, leaf = _walk(doc, path)
                parent[leaf] = parent.get(leaf, 0) + amount
            text = self._dumps(doc)
            try:
                if row is None:
                    db.execute(f"INSERT INTO {table} (id, doc) VALUES (?, ?)", (id, text))
                    if isinstance(doc.get("expires_at"), datetime):
                        self._sweep_windows(db, table, doc["expires_at"])
                else:
                    db.execute(f"UPDATE {table} SET doc = ? WHERE id = ?", (text, id))
            except sqlite3.IntegrityError as exc:
                raise self._duplicate(collection, exc) from exc
        if returning is True:
            return doc  # decoded, or built from copies: nothing shared with the caller
        return _only(doc, returning) if returning else {}

    def _sweep_windows(self, db: sqlite3.Connection, table: str, new_end: datetime) -> None:
        """Drop windows that have surely ended (MemoryStore._expire's reasoning: one being
        created now ends at most a day from now), once per minute of window ends."""
        if self._windows_swept is not None and new_end - self._windows_swept < _WINDOW_SWEEP:
            return
        ends = _field("expires_at")
        deleted = db.execute(
            f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} "
            f"WHERE {ends} <= ? LIMIT ?)",
            (_date_text(new_end - _GRACE), SWEEP_CHUNK),
        ).rowcount
        if deleted < SWEEP_CHUNK:
            self._windows_swept = new_end

    async def increment_many(
        self,
        collection: str,
        changes: Mapping[str, Mapping[str, float | int]],
        *,
        once: tuple[str, int] | None = None,
    ) -> None:
        if changes:
            plain = {id: dict(inc) for id, inc in changes.items()}
            await self._run(self._increment_many, collection, plain, once)

    def _increment_many(
        self,
        collection: str,
        changes: dict[str, dict[str, float | int]],
        once: tuple[str, int] | None,
    ) -> None:
        table = self._table(collection)
        with self._write() as db:
            for id, inc in changes.items():
                row = db.execute(f"SELECT doc FROM {table} WHERE id = ?", (id,)).fetchone()
                if row is None:
                    continue
                doc = loads(row[0])
                if once is not None:
                    settled = doc.setdefault(SETTLED, {})
                    if settled.get(once[0]) == once[1]:
                        continue  # took this batch already
                    settled[once[0]] = once[1]
                for path, amount in inc.items():
                    parent, leaf = _walk(doc, path)
                    parent[leaf] = parent.get(leaf, 0) + amount
                db.execute(f"UPDATE {table} SET doc = ? WHERE id = ?", (self._dumps(doc), id))

    async def unset_everywhere(self, collection: str, paths: Sequence[str]) -> int:
        return await self._run(self._unset_everywhere, collection, list(paths))

    def _unset_everywhere(self, collection: str, paths: list[str]) -> int:
        table = self._table(collection)
        # json_type is NULL for a path the document lacks (_field checked the parts).
        has = " OR ".join(
            _field(p).replace("json_extract", "json_type", 1) + " IS NOT NULL" for p in paths
        )
        changed = 0
        with self._write() as db:
            rows = db.execute(f"SELECT id, doc FROM {table} WHERE {has}").fetchall()
            for id, text in rows:
                doc = loads(text)
                for path in paths:
                    parent: Any = doc
                    *parents, leaf = path.split(".")
                    for part in parents:
                        parent = parent.get(part) if isinstance(parent, dict) else None
                    if isinstance(parent, dict):
                        parent.pop(leaf, None)
                db.execute(f"UPDATE {table} SET doc = ? WHERE id = ?", (self._dumps(doc), id))
                changed += 1
        return changed

    # The change feed (store/changes.py): worker processes of one machine share the file.

    async def note_change(self, kind: str, id: str | None) -> None:
        await bump(self, kind, id)

    async def read_changes(self) -> dict[str, Doc]:
        return await counters(self)

    async def wait_for_change(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
