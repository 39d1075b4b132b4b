"""Storage: the protocol, and the MongoDB and in-process implementations."""

from .base import SETTLED, Doc, DuplicateError, Store, StoreUnavailable, Where, log_failure
from .memory import MemoryStore
from .mongo import MongoStore

__all__ = [
    "SETTLED",
    "Doc",
    "DuplicateError",
    "MemoryStore",
    "MongoStore",
    "Store",
    "StoreUnavailable",
    "Where",
    "log_failure",
]
