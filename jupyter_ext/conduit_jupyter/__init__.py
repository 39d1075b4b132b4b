"""conduit-tornado inside Jupyter: the server extension and the ipywidgets.

Widgets live in ``conduit_jupyter.widgets`` (needs ipywidgets, the ``jupyter`` extra)."""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .extension import ConduitExtension

    return [{"module": "conduit_jupyter", "app": ConduitExtension}]
