"""A store with its operations timed and its failures counted (core/meters.py).

One wrapper for every store kind, made once by the gateway: each operation of the Store
protocol gets a timed method, written here once for all of them; anything else (``kind``,
``persistent``, a store's own attributes) reads through to the wrapped store.
"""

from __future__ import annotations

import time
from typing import Any, cast

from conduit_tornado.core import meters

from .base import DuplicateError, Store

#: The protocol's operations (start and close are not: they run once).
OPERATIONS = (
    "ping",
    "insert",
    "insert_many",
    "get",
    "find_one",
    "find",
    "count",
    "update",
    "delete",
    "increment",
    "increment_many",
    "sum_by",
)


class MeteredStore:
    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _timed(name: str) -> Any:
    seconds, failures = meters.store_operation(name)

    async def operation(self: MeteredStore, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            # Looked up per call, not bound once: a store's method may be replaced later.
            return await getattr(self.inner, name)(*args, **kwargs)
        except DuplicateError:
            raise  # an answer (the unique field is taken), not a failure
        except Exception:
            failures.inc()
            raise
        finally:
            seconds.add(time.perf_counter() - started)

    operation.__name__ = operation.__qualname__ = name
    return operation


for _name in OPERATIONS:
    setattr(MeteredStore, _name, _timed(_name))


def metered(store: Store) -> Store:
    """``store`` with its operations metered (a store metered already is returned as is)."""
    if isinstance(store, MeteredStore):
        return cast(Store, store)
    return cast(Store, MeteredStore(store))


def unwrapped(store: Store) -> Store:
    """The store a metered one wraps (for checks of its kind)."""
    inner: Store = getattr(store, "inner", store) if isinstance(store, MeteredStore) else store
    return inner
