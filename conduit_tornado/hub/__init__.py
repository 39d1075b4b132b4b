"""JupyterHub as the identity layer: Hub OAuth sign-in, one virtual key per hub user,
and the routes a hub service needs (see docs/jupyterhub.md).

Needs the ``jupyterhub`` package (the ``hub`` extra), imported only in hub mode."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conduit_tornado.context import Context

    from .identity import Hub


def enabled(settings: Any, env: Mapping[str, str] = os.environ) -> bool:
    """Whether hub mode is on (CONDUIT_JUPYTERHUB; auto: run as a hub service, which the
    hub tells by JUPYTERHUB_SERVICE_NAME and JUPYTERHUB_API_TOKEN)."""
    if settings.jupyterhub == "auto":
        return bool(env.get("JUPYTERHUB_SERVICE_NAME") and env.get("JUPYTERHUB_API_TOKEN"))
    return bool(settings.jupyterhub == "on")


def hub_for(ctx: Context, prefix: str) -> Hub | None:
    """The gateway's link to its hub, or None when not in hub mode."""
    if not enabled(ctx.settings):
        return None
    from conduit_tornado.server.workers import worker_count

    if worker_count(ctx.settings.workers) > 1:
        # HubOAuth keeps each sign-in's state in the process that began it; the hub's
        # callback could reach another worker.
        raise ValueError("as a JupyterHub service the gateway runs one process: CONDUIT_WORKERS=1")
    try:
        from .identity import Hub
    except ImportError as exc:
        raise RuntimeError(
            "CONDUIT_JUPYTERHUB is on (or the gateway runs as a hub service) but the "
            "jupyterhub package is missing: pip install 'conduit-tornado[hub]'"
        ) from exc
    from .policy import load_policy

    return Hub(ctx, load_policy(ctx.settings.config), prefix)


__all__ = ["enabled", "hub_for"]
