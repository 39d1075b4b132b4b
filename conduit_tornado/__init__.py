"""conduit-tornado: an OpenAI-compatible LLM gateway on Tornado."""

from conduit_tornado.api.routes import make_app, routes
from conduit_tornado.core.settings import Settings

from .admin_client import AdminClient, AdminError
from .embedded import RunningGateway, start
from .gateway import Gateway

__version__ = "0.1.0"
__all__ = [
    "AdminClient",
    "AdminError",
    "Gateway",
    "RunningGateway",
    "Settings",
    "__version__",
    "make_app",
    "routes",
    "start",
]
