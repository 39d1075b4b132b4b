"""Copying a gateway's state between stores: ``conduit-tornado export`` and ``import``.

The file is JSON lines: a header naming the format and its version, one line per
document (``{"c": collection, "d": document}``), and a trailer with the counts, so a
truncated file is refused before anything is imported. Datetimes are written as
``{"$date": ISO 8601}``.

What goes: keys (their hashes; the keys themselves are never stored), groups, providers,
models, usage rollups, end users' budgets, recorded budget alerts, the master key's hash,
and request logs if asked for. What does not: limit windows, parallel slots, instance
heartbeats and realtime sessions, which describe the moment, not the gateway.

Provider credentials are decrypted with the source's secret and written in clear (the
file is created readable by its owner only), and encrypted again with the target's secret
on import. Importing skips documents the target already has (same id or unique field).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from conduit_tornado.core.security import SecretBox

from .store import Doc, DuplicateError, Store

FORMAT = "conduit-tornado-export"
VERSION = 1
STATE = ("meta", "groups", "keys", "providers", "models", "usage", "user_budgets", "alerts")
LOGS = "request_logs"
PAGE = 500
CLEAR = "credentials_clear"  # a provider's decrypted credentials, in the file only


class TransferError(Exception):
    """The file or the stores do not allow the copy; the message says why."""


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$date": value.astimezone(UTC).isoformat()}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and "$date" in value:
            return datetime.fromisoformat(value["$date"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


async def _all(store: Store, collection: str) -> AsyncIterator[Doc]:
    """Every document of a collection, a page at a time in _id order."""
    last: Any = None
    while True:
        where = {} if last is None else {"_id": {"$gt": last}}
        page = await store.find(collection, where, sort="_id", limit=PAGE)
        for doc in page:
            yield doc
        if len(page) < PAGE:
            return
        last = page[-1]["_id"]


async def export(
    store: Store, box: SecretBox | None, out: IO[str], *, logs: bool
) -> dict[str, int]:
    """Write the store's state to ``out``; return the documents written per collection."""
    counts: dict[str, int] = {}
    out.write(json.dumps({"format": FORMAT, "version": VERSION, "source": store.kind}) + "\n")
    for collection in (*STATE, *((LOGS,) if logs else ())):
        n = 0
        async for doc in _all(store, collection):
            if collection == "providers" and doc.get("credentials"):
                if box is None:
                    raise TransferError(
                        "provider credentials cannot be decrypted: set CONDUIT_SECRET_KEY to "
                        "the secret the source gateway runs with"
                    )
                try:
                    clear = json.loads(box.decrypt(doc.pop("credentials")))
                except Exception as exc:
                    raise TransferError(
                        f"provider {doc.get('name')!r}: its credentials do not decrypt with "
                        "this secret (CONDUIT_SECRET_KEY, or the local store's secret.key)"
                    ) from exc
                doc[CLEAR] = clear
            out.write(json.dumps({"c": collection, "d": _encode(doc)}) + "\n")
            n += 1
        counts[collection] = n
    out.write(json.dumps({"end": True, "counts": counts}) + "\n")
    return counts


def open_private(path: Path) -> IO[str]:
    """A new file only its owner can read (it holds provider credentials)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    return os.fdopen(fd, "w", encoding="utf-8")


@dataclass
class Imported:
    written: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)


def check(path: Path) -> dict[str, int]:
    """Read the whole file once: its header, every line, and its trailer. Return the
    trailer's counts; raise TransferError if any of it is wrong."""
    counts: dict[str, int] = {}
    trailer: dict[str, Any] | None = None
    with path.open(encoding="utf-8") as f:
        header = _line(f.readline(), 1)
        if header.get("format") != FORMAT:
            raise TransferError(f"{path} is not a conduit-tornado export")
        if header.get("version") != VERSION:
            raise TransferError(
                f"{path} is format version {header.get('version')}; this conduit-tornado "
                f"reads version {VERSION}"
            )
        for number, text in enumerate(f, 2):
            if trailer is not None:
                raise TransferError(f"{path}:{number}: lines after the end")
            line = _line(text, number)
            if line.get("end") is True:
                trailer = line
                continue
            if not isinstance(line.get("c"), str) or not isinstance(line.get("d"), dict):
                raise TransferError(f"{path}:{number}: not a document line")
            counts[line["c"]] = counts.get(line["c"], 0) + 1
    if trailer is None:
        raise TransferError(f"{path} ends early (no trailer): was the export interrupted?")
    expected = {k: v for k, v in trailer.get("counts", {}).items() if v}
    if counts != expected:
        raise TransferError(f"{path}: document counts {counts} differ from its trailer")
    return counts


def _line(text: str, number: int) -> dict[str, Any]:
    try:
        line = json.loads(text)
    except ValueError:
        raise TransferError(f"line {number} is not JSON") from None
    if not isinstance(line, dict):
        raise TransferError(f"line {number} is not a JSON object")
    return line


async def import_file(path: Path, store: Store, box: SecretBox | None) -> Imported:
    """Import a checked file (see ``check``) into ``store``."""
    result = Imported()
    batch: list[Doc] = []
    current: str | None = None
    with path.open(encoding="utf-8") as f:
        f.readline()  # the header
        for text in f:
            line = json.loads(text)
            if line.get("end") is True:
                break
            collection, doc = line["c"], _decode(line["d"])
            if collection != current:
                await _write(store, current, batch, result)
                current, batch = collection, []
            if collection == "providers" and CLEAR in doc:
                if box is None:
                    raise TransferError(
                        "the target has no lasting secret for provider credentials: set "
                        "CONDUIT_SECRET_KEY (the one the target gateway will run with)"
                    )
                doc["credentials"] = box.encrypt(json.dumps(doc.pop(CLEAR)))
            batch.append(doc)
            if len(batch) >= PAGE:
                await _write(store, current, batch, result)
                batch = []
    await _write(store, current, batch, result)
    return result


async def _write(store: Store, collection: str | None, docs: list[Doc], result: Imported) -> None:
    if collection is None or not docs:
        return
    ids = [d["_id"] for d in docs]

    async def present(among: list[Any]) -> set[Any]:
        found = await store.find(collection, {"_id": {"$in": among}}, limit=len(among))
        return {d["_id"] for d in found}

    there = await present(ids)
    fresh = [d for d in docs if d["_id"] not in there]
    skipped = len(docs) - len(fresh)
    written = len(fresh)
    if fresh:
        try:
            await store.insert_many(collection, fresh)
        except DuplicateError:
            # One clashes on a unique field (a key's hash, a provider's name). Which of the
            # others the batch wrote is up to the store: those there now were; the rest go
            # one at a time.
            now = await present([d["_id"] for d in fresh])
            written = len(now)
            for doc in fresh:
                if doc["_id"] in now:
                    continue
                try:
                    await store.insert(collection, doc)
                    written += 1
                except DuplicateError:
                    skipped += 1
    result.written[collection] = result.written.get(collection, 0) + written
    if skipped:
        result.skipped[collection] = result.skipped.get(collection, 0) + skipped
