"""What the store wrappers share (metered.py times operations, traced.py makes spans):
reading through to the wrapped store, one generated method per protocol operation, and
finding the real store behind any number of wrappers."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .base import Store

#: The protocol's operations on a collection (start, close and ping run once or are not
#: about a collection).
COLLECTION_OPERATIONS = (
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


class StoreWrapper:
    """Delegates everything to ``inner``; a subclass replaces some operations with
    :func:`wrap_operations`."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # kind, persistent, start, close, a store's extras


def wrap_operations(
    cls: type[StoreWrapper], names: Iterable[str], make: Callable[[str], Any]
) -> None:
    """Give ``cls`` the method ``make(name)`` for each operation named."""
    for name in names:
        operation = make(name)
        operation.__name__ = operation.__qualname__ = name
        setattr(cls, name, operation)


def innermost(store: Store) -> Store:
    """The store behind every wrapper (for checks of its kind)."""
    while isinstance(store, StoreWrapper):
        store = store.inner
    return store
