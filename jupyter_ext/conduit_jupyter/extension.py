"""The Jupyter Server extension: the gateway's own handler classes, mounted at
``{base_url}conduit/``, with one context built on Jupyter's running loop."""

from __future__ import annotations

from typing import Any

import tornado.web
from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Unicode

from conduit_tornado.api.routes import app_settings, routes
from conduit_tornado.core.settings import Settings
from conduit_tornado.gateway import Gateway, describe_store


class ConduitExtension(ExtensionApp):
    """Settings come from the same ``CONDUIT_*`` environment as the standalone server."""

    name = "conduit_jupyter"
    load_other_extensions = True

    url_prefix = Unicode("conduit", config=True, help="Mount point under Jupyter's base_url.")
    allow_jupyter_admin = Bool(
        True,
        config=True,
        help="Let a logged-in Jupyter user (cookie session) use the admin API, as well as the "
        "master key. Right for a single-user server; turn it off on shared ones.",
    )

    def initialize_settings(self) -> None:
        if self.allow_jupyter_admin:
            self.settings["conduit_admin_user"] = jupyter_user_logged_in

    def initialize_handlers(self) -> None:
        # Jupyter prepends its base_url; the catch-all keeps Jupyter's HTML 404 out of /conduit.
        self.handlers.extend(routes("/" + self.url_prefix.strip("/"), catch_all=True))

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        self.gateway = Gateway(Settings())
        ctx = await self.gateway.build()  # store and clients created on Jupyter's loop
        serverapp.web_app.settings.update(app_settings(ctx))
        self.log.info(
            "conduit gateway mounted at %s%s/ (store: %s)",
            serverapp.base_url,
            self.url_prefix,
            describe_store(ctx.store),
        )
        if self.gateway.generated_master_key:
            self.log.warning(
                "conduit: no CONDUIT_MASTER_KEY set; a generated one is in effect for this server. "
                "Use the logged-in Jupyter session, set CONDUIT_MASTER_KEY, or print a new one "
                "with `conduit-tornado admin reset-master-key`."
            )

    async def stop_extension(self) -> None:
        gateway = getattr(self, "gateway", None)
        if gateway is not None:
            await gateway.stop()


async def jupyter_user_logged_in(handler: tornado.web.RequestHandler) -> bool:
    """Whether the request carries a Jupyter login cookie (a browser session)."""
    provider = handler.settings.get("identity_provider")
    if provider is None:
        return False
    user = provider.get_user_cookie(handler)
    if hasattr(user, "__await__"):
        user = await user
    return user is not None
