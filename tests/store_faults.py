"""Real stores with faults let in: for what the gateway does when the store fails."""

from __future__ import annotations

from typing import Any

from conduit_tornado.store import Store, StoreUnavailable


class Down:
    """A real store that, while ``down``, fails as an unreachable server does: every
    operation, or those whose document id holds ``only``."""

    def __init__(self, store: Store, only: str | None = None) -> None:
        self._store = store
        self.only = only
        self.down = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.down and (self.only is None or self.only in str(args[1:2])):
                raise StoreUnavailable("MongoDB: timed out")
            return await attr(*args, **kwargs)

        return call


class AnswersLost:
    """A real store that applies writes but loses the answers of the operations named in
    ``losing``: the writer hears a timeout for a write that was done (a connection cut
    just after it)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.losing: set[str] = set()
        self.lost = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            result = await attr(*args, **kwargs)
            if name in self.losing:
                self.lost += 1
                raise StoreUnavailable("MongoDB: timed out")
            return result

        return call
