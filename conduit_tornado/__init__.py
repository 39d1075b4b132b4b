"""conduit-tornado: an OpenAI-compatible LLM gateway on Tornado."""

from .admin_client import AdminClient, AdminError
from .app import make_app, routes
from .embedded import RunningGateway, start
from .gateway import Gateway
from .settings import Settings

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
