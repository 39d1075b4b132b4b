"""JupyterHub wiring, for ``jupyterhub_config.py`` and for notebooks on the hub.

In ``jupyterhub_config.py`` (the hub's process; nothing here imports ipywidgets)::

    from conduit_jupyter.hub import conduit_roles, conduit_service, pre_spawn_hook

    c.JupyterHub.services = [conduit_service(port=5055, master_key=MASTER, config=PATH)]
    c.JupyterHub.load_roles = conduit_roles()
    c.Spawner.pre_spawn_hook = pre_spawn_hook(master_key=MASTER, gateway="http://127.0.0.1:5055")

Each spawn then asks the gateway (directly, with the master key) for the user's key: created
on first use, with a **new secret at every spawn**. The secret goes into that server's
environment as ``OPENAI_API_KEY`` (with ``OPENAI_BASE_URL``), so ``OpenAI()`` works with no
setup, and nowhere else: the gateway keeps only its hash, and the secret a stopped server
had stops working when the user's next server starts. (The other choice, keeping the secret
sealed so every spawn gets the same one, would leave a recoverable secret at rest for a
convenience only users with several named servers at once would notice; those servers then
share one key, and the newest holds the live secret.)

In a notebook on the hub: ``UserClient()`` reads those two variables and shows the user
their own key and usage, with no master key (``conduit_jupyter.widgets.MyUsage`` draws it).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import httpx2

from conduit_tornado.admin_client import AdminError, unreachable

log = logging.getLogger("conduit.hub")
SERVICE = "conduit"


def conduit_service(
    *,
    port: int = 5055,
    master_key: str,
    name: str = SERVICE,
    config: str | None = None,
    environment: Mapping[str, str] | None = None,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """The ``c.JupyterHub.services`` entry that runs the gateway as a hub-managed service
    on loopback. The hub's proxy forwards ``/services/<name>/`` to it with the prefix kept,
    which the gateway serves under (CONDUIT_BASE_PATH defaults to it)."""
    env = {"CONDUIT_MASTER_KEY": master_key, "CONDUIT_HOST": "127.0.0.1", "CONDUIT_PORT": str(port)}
    if config is not None:
        env["CONDUIT_CONFIG"] = config
    env.update(environment or {})
    return {
        "name": name,
        "url": f"http://127.0.0.1:{port}",
        "command": command or [sys.executable, "-m", "conduit_tornado", "serve"],
        "environment": env,
        "oauth_no_confirm": True,  # our own service: no "authorize access?" page
        "display": True,
    }


def conduit_roles(name: str = SERVICE) -> list[dict[str, Any]]:
    """``c.JupyterHub.load_roles``: the service may list users and read their admin flag
    and groups (to revoke keys and scope views); every user may sign in to it."""
    return [
        {
            "name": f"{name}-service",
            "description": "The LLM gateway: reads users to give each a key",
            "scopes": ["list:users", "read:users"],
            "services": [name],
        },
        {
            "name": "user",
            "description": "Standard user privileges, and the LLM gateway",
            "scopes": ["self", f"access:services!service={name}"],
        },
    ]


def pre_spawn_hook(
    *,
    master_key: str,
    gateway: str = "http://127.0.0.1:5055",
    service_prefix: str = f"/services/{SERVICE}",
    openai_base_url: str | None = None,
    required: bool = True,
    timeout: float = 20.0,
) -> Callable[[Any], Awaitable[None]]:
    """A ``c.Spawner.pre_spawn_hook`` putting the user's key into their server.

    ``gateway``: where the hub reaches the service (its ``url``); ``service_prefix``: the
    path it serves under. ``openai_base_url``: what notebooks use, default the gateway
    directly (``{gateway}{service_prefix}/v1``), right when servers run on the hub's
    host; give the public ``https://hub.example/services/conduit/v1`` when they do not.
    ``required``: a failure stops the spawn with the reason; False spawns without a key."""
    base = gateway.rstrip("/") + "/" + service_prefix.strip("/")
    client_url = (openai_base_url or base + "/v1").rstrip("/")

    async def hook(spawner: Any) -> None:
        user = spawner.user.name
        try:
            secret = await user_key(base, master_key, user, seconds=timeout)
        except AdminError as exc:
            if required:
                raise RuntimeError(f"conduit gateway: no key for {user}: {exc.message}") from None
            log.warning("conduit gateway: %s spawns without a key: %s", user, exc.message)
            return
        # A new dict: the configured one may be shared between spawners.
        spawner.environment = {
            **spawner.environment,
            "OPENAI_BASE_URL": client_url,
            "OPENAI_API_KEY": secret,
        }

    return hook


async def user_key(base: str, master_key: str, user: str, *, seconds: float = 20.0) -> str:
    """A new secret for ``user``'s key (created on first use) from the gateway at ``base``."""
    url = f"{base.rstrip('/')}/hub/api/users/{quote(user, safe='')}/environment"
    async with httpx2.AsyncClient(timeout=seconds) as http:
        try:
            response = await http.post(
                url, headers={"Authorization": f"Bearer {master_key}"}, json={}
            )
        except httpx2.TransportError as exc:
            raise unreachable(base, exc) from None
    body = _json(response)
    if response.status_code != 200:
        error = body.get("error") or {}
        raise AdminError(
            response.status_code,
            str(error.get("message") or response.reason_phrase),
            error.get("code"),
            error.get("param"),
        )
    secret: str = body["environment"]["OPENAI_API_KEY"]
    return secret


def _json(response: httpx2.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


class UserClient:
    """A hub user's own view of the gateway, with their virtual key (no master key):
    their key (spend, budget, limits) and its usage. Defaults: ``OPENAI_BASE_URL`` and
    ``OPENAI_API_KEY``, which the hub's spawn hook sets."""

    def __init__(
        self, url: str | None = None, key: str | None = None, *, timeout: float = 30.0
    ) -> None:
        base = url or os.environ.get("OPENAI_BASE_URL", "")
        key = key or os.environ.get("OPENAI_API_KEY", "")
        if not base or not key:
            raise AdminError(
                0,
                "No gateway to ask: OPENAI_BASE_URL and OPENAI_API_KEY are not set. On the "
                "hub, restart your server so the spawner sets them; elsewhere pass url= and key=.",
                "not_configured",
                None,
            )
        self.url = base.rstrip("/").removesuffix("/v1")
        self._http = httpx2.AsyncClient(
            base_url=self.url + "/hub/api",
            headers={"Authorization": f"Bearer {key}"},
            timeout=timeout,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _get(self, path: str, **params: Any) -> dict[str, Any]:
        try:
            response = await self._http.get(path, params=params)
        except httpx2.TransportError as exc:
            raise unreachable(self.url, exc) from None
        body = _json(response)
        if response.status_code != 200:
            error = body.get("error") or {}
            raise AdminError(
                response.status_code,
                str(error.get("message") or response.reason_phrase),
                error.get("code"),
                error.get("param"),
            )
        return body

    async def me(self) -> dict[str, Any]:
        """``{"user", "key": {...spend, max_budget, budget_duration...}}``."""
        return await self._get("/me")

    async def usage(
        self, *, start: str | None = None, end: str | None = None, group_by: str = "day"
    ) -> dict[str, Any]:
        """The key's usage per day (or per model): ``{"data", "totals", "key"}``."""
        params = {"group_by": group_by, "start": start, "end": end}
        return await self._get("/me/usage", **{k: v for k, v in params.items() if v})
