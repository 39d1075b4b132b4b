"""conduit-tornado: an OpenAI-compatible LLM gateway on Tornado."""

from .admin_client import AdminClient, AdminError
from .app import make_app, routes
from .gateway import Gateway
from .settings import Settings

__version__ = "0.1.0"
__all__ = ["AdminClient", "AdminError", "Gateway", "Settings", "__version__", "make_app", "routes"]
