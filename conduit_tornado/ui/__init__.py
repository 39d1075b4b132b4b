"""The web UI: static pages served by the gateway, and browser sessions."""
