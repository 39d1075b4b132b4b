"""GET / : where a visitor goes from the gateway's bare address.

A browser (its Accept names text/html) is sent to the web UI; any other client gets a
small JSON answer naming the gateway and its entry points, so an SDK or curl pointed at
the bare address learns where the API is instead of meeting a 404."""

from __future__ import annotations

import importlib.metadata

from .base import PublicHandler

NAME = "conduit-tornado"


def _version() -> str:
    try:
        return importlib.metadata.version(NAME)
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "unknown"


VERSION = _version()


class RootHandler(PublicHandler):
    def get(self) -> None:
        # The mount prefix (CONDUIT_BASE_PATH, a hub's, Jupyter's) is the request's own path.
        base = self.request.path.rstrip("/")
        self.set_header("Vary", "Accept")  # one URL, two answers: caches must tell them apart
        if "text/html" in self.request.headers.get("Accept", ""):
            self.redirect(base + "/ui/")
            return
        self.send_json(
            {
                "name": NAME,
                "version": VERSION,
                "links": {
                    "api": base + "/v1",
                    "models": base + "/v1/models",
                    "ui": base + "/ui/",
                    "openapi": base + "/openapi.json",
                    "health": base + "/health/ready",
                },
            }
        )
