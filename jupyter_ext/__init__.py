"""Jupyter Server extension for conduit-tornado (mounted handlers and widgets).

Placeholder until the Jupyter issue: the gateway's routes are built by
``conduit_tornado.app.routes(prefix)`` so the extension can mount the same handlers.
"""
