"""A store whose operations made while serving a traced request become child spans.

Put in front of the real store only when tracing is on (gateway.py), so an untraced
gateway calls its store directly. Only operations awaited by the request's own task are
its children: background work (the recorder's batches, settlements and alerts that a
request's task started and that serve many requests, heartbeats) makes no spans.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, cast

from conduit_tornado.core import tracing

from .base import Store
from .wrapping import COLLECTION_OPERATIONS, StoreWrapper, wrap_operations


class TracedStore(StoreWrapper):
    """Collection operations are traced; everything else reads through."""


def _traced(name: str) -> Callable[..., Coroutine[Any, Any, Any]]:
    async def operation(self: TracedStore, collection: str, *args: Any, **kwargs: Any) -> Any:
        call = getattr(self.inner, name)
        trace = tracing.current.get()
        if trace is None or trace.task is not asyncio.current_task():
            return await call(collection, *args, **kwargs)
        span = trace.store_call(name, collection, self.inner.kind)
        try:
            return await call(collection, *args, **kwargs)
        except BaseException as exc:
            trace.failed(span, exc)
            raise
        finally:
            span.end()

    return operation


wrap_operations(TracedStore, COLLECTION_OPERATIONS, _traced)


def traced(store: Store) -> Store:
    return cast(Store, TracedStore(store))
