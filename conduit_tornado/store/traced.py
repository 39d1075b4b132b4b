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

#: The protocol's operations on a collection (their first argument): each gets a span.
OPERATIONS = (
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


class TracedStore:
    """Delegates everything to ``inner``; collection operations are traced."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # kind, persistent, start, close, ping, extras


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

    operation.__name__ = name
    return operation


for _name in OPERATIONS:
    setattr(TracedStore, _name, _traced(_name))


def traced(store: Store) -> Store:
    return cast(Store, TracedStore(store))
