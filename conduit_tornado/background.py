"""A running gateway's background work for operating as one of many instances: the change
feed (admin changes made elsewhere), pruning of instances that are gone, and deployment
health. Started and stopped with the gateway (gateway.py)."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from prometheus_client import Counter

from conduit_tornado.admission.pruning import Pruner
from conduit_tornado.routing.health import HealthChecks
from conduit_tornado.store.changes import CATALOG, GROUPS, KEYS, MASTER_KEY, ChangeFeed

from .context import Context

CHANGES_APPLIED = Counter(
    "conduit_config_changes_applied_total",
    "Admin changes read from the change feed and applied here (this instance's own "
    "included: it reloads what it changed once more).",
    ["kind"],
)


def wire_feed(feed: ChangeFeed, ctx: Context) -> None:
    """What each kind of change drops or reloads on this instance."""
    feed.on(KEYS, ctx.keys.invalidate)
    feed.on(GROUPS, ctx.limiter.forget_group)
    feed.on(CATALOG, lambda _: ctx.catalog.refresh())

    async def master_key(_: str | None) -> None:
        if ctx.settings.master_key is not None:
            return  # set by the environment: the store's does not apply
        stored = await ctx.store.get("meta", "master_key")
        if stored is not None:
            ctx.master_key_hash = str(stored["hash"])

    feed.on(MASTER_KEY, master_key)
    feed.on_applied = lambda kind: CHANGES_APPLIED.labels(kind).inc()


def tasks(ctx: Context, feed: ChangeFeed) -> list[Coroutine[Any, Any, None]]:
    s = ctx.settings
    health = HealthChecks(ctx.catalog, ctx.router, ctx.upstream, s)
    pruner = Pruner(ctx.store, ctx.clock, ctx.limiter.instance, s.instance_ttl)
    work = [pruner.run(), health.run()]
    if ctx.store.persistent:  # the in-process store has no other instance to hear from
        work.append(feed.run())
    return work
