"""A gateway started inside a running program: a notebook cell, a script, a test.

    gw = await conduit_tornado.start(port=5055, config={"providers": [...], "models": [...]})
    key = await gw.admin.create_key(name="me")
    ...
    await gw.stop()

It serves on the caller's running event loop (in Jupyter, the kernel's), between cells too.
"""

from __future__ import annotations

import errno
import secrets
from pathlib import Path
from typing import Any

from conduit_tornado.core.settings import Settings

from .admin_client import AdminClient
from .config_file import load_config, parse_config
from .gateway import Gateway
from .store import Store


class RunningGateway:
    """What ``start`` returns: where the gateway is, how to administer it, how to stop it."""

    def __init__(self, gateway: Gateway, master_key: str) -> None:
        self._gateway = gateway
        self.master_key = master_key
        self.admin = AdminClient(gateway.url, master_key)

    @property
    def url(self) -> str:
        return self._gateway.url

    @property
    def base_url(self) -> str:
        """What to give the openai SDK as ``base_url``."""
        return self.url + "/v1"

    @property
    def port(self) -> int:
        assert self._gateway.port is not None
        return self._gateway.port

    @property
    def store(self) -> Store:
        assert self._gateway.ctx is not None
        return self._gateway.ctx.store

    async def stop(self) -> None:
        await self.admin.aclose()
        await self._gateway.stop()

    def __repr__(self) -> str:
        return f"<conduit gateway at {self.url}>"


async def start(
    port: int = 5000,
    *,
    host: str = "127.0.0.1",
    store: str | Store | None = None,
    config: str | Path | dict[str, Any] | None = None,
    master_key: str | None = None,
    **settings: Any,
) -> RunningGateway:
    """Start a gateway on the running loop. ``store`` is "local" (a file in
    CONDUIT_DATA_DIR, kept across restarts), "memory", a mongodb:// URI or a Store; unset,
    CONDUIT_STORE decides (MongoDB when CONDUIT_MONGODB_URI is set, else the local file).
    ``config`` is a YAML/TOML file or the same structure as a dict; other keyword arguments
    are settings (as ``CONDUIT_*`` would set them)."""
    master_key = master_key or "condt_master_" + secrets.token_urlsafe(32)
    if isinstance(store, str):
        if store.startswith(("mongodb://", "mongodb+srv://")):
            settings.update(mongodb_uri=store, store="mongodb")
        elif store in ("memory", "local"):
            settings["store"] = store
        else:
            raise ValueError('store must be "local", "memory", a mongodb:// URI, or a Store')
    resolved = Settings(host=host, port=port, master_key=master_key, **settings)  # + CONDUIT_*
    gateway = Gateway(resolved, store=None if isinstance(store, str) else store)
    try:
        await gateway.start()
    except OSError as exc:
        await gateway.stop()
        if exc.errno == errno.EADDRINUSE:
            raise RuntimeError(
                f"port {port} is already in use: is a gateway already running there? "
                "Stop it with `await gw.stop()`, or pick another port."
            ) from None
        raise
    if config is not None:
        assert gateway.ctx is not None
        providers, models = (
            load_config(Path(config)) if isinstance(config, str | Path) else parse_config(config)
        )
        await gateway.ctx.catalog.apply(providers, models)
    return RunningGateway(gateway, master_key)
