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
from .wrapping import COLLECTION_OPERATIONS, StoreWrapper, wrap_operations


class MeteredStore(StoreWrapper):
    pass


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

    return operation


# ping too: a failing ping is a store failure the metrics should show.
wrap_operations(MeteredStore, ("ping", *COLLECTION_OPERATIONS), _timed)


def metered(store: Store) -> Store:
    """``store`` with its operations metered (a store metered already is returned as is)."""
    if isinstance(store, MeteredStore):
        return cast(Store, store)
    return cast(Store, MeteredStore(store))
