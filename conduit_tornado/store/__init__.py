"""Storage: the protocol, and the MongoDB, local-file (SQLite) and in-process implementations."""

from .base import (
    MIGRATIONS,
    SETTLED,
    Doc,
    DuplicateError,
    Store,
    StoreUnavailable,
    Where,
    log_failure,
)
from .memory import MemoryStore
from .mongo import MongoStore
from .sqlite import SQLiteStore

__all__ = [
    "MIGRATIONS",
    "SETTLED",
    "Doc",
    "DuplicateError",
    "MemoryStore",
    "MongoStore",
    "SQLiteStore",
    "Store",
    "StoreUnavailable",
    "Where",
    "log_failure",
]
