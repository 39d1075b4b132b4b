"""The realtime API, by what each module holds:

- ``realtime_secrets``: POST /v1/realtime/client_secrets and POST /v1/realtime/sessions;
- ``realtime_socket``: the WebSocket relay (/v1/realtime, /v1/realtime/sessions/{id}/ws);
- ``realtime_calls``: WebRTC calls, the gateway's sideband of each, and their hangup;
- ``realtime_meter``: the realtime-capable route of a model and the Meter charging them.

This module names the handlers for the route table (api/routes.py).
"""

from __future__ import annotations

from .realtime_calls import CallSideband, RealtimeCallHangupHandler, RealtimeCallsHandler
from .realtime_meter import REALTIME_PROVIDERS, Meter
from .realtime_secrets import RealtimeClientSecretsHandler, RealtimeSessionsHandler
from .realtime_socket import BROWSER_AUTH, SENDABLE, RealtimeSocketHandler

__all__ = [
    "BROWSER_AUTH",
    "REALTIME_PROVIDERS",
    "SENDABLE",
    "CallSideband",
    "Meter",
    "RealtimeCallHangupHandler",
    "RealtimeCallsHandler",
    "RealtimeClientSecretsHandler",
    "RealtimeSessionsHandler",
    "RealtimeSocketHandler",
]
