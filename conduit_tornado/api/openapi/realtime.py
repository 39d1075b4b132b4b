"""The realtime API: sessions and client secrets for browsers, the WebSocket, and WebRTC
calls with their hangup."""

from __future__ import annotations

from .common import ANY_OBJECT, MODEL, STRING, TEXT, Json, Op, q, ref

SESSION_SCHEMAS: dict[str, Json] = {
    "RealtimeSessionRequest": {
        "type": "object",
        "required": ["model"],
        "properties": {
            "model": MODEL,
            "modalities": {"type": "array", "items": {"enum": ["text", "audio"]}},
            "instructions": STRING,
            "voice": STRING,
            "temperature": {"type": "number"},
            "tools": {"type": "array"},
        },
        "description": "Other session settings are kept and passed on when the socket opens.",
    },
    "RealtimeSession": {
        "type": "object",
        "required": ["id", "object", "model", "client_secret", "websocket_url"],
        "properties": {
            "id": STRING,
            "object": {"const": "realtime.session"},
            "model": STRING,
            "client_secret": {
                "type": "object",
                "required": ["value", "expires_at"],
                "properties": {"value": STRING, "expires_at": {"type": "integer"}},
            },
            "websocket_url": {"type": "string", "format": "uri"},
        },
    },
}

SECRET_SCHEMAS: dict[str, Json] = {
    "ClientSecretRequest": {
        "type": "object",
        "properties": {"session": ANY_OBJECT, "expires_after": ANY_OBJECT},
    },
    "ClientSecret": {
        "type": "object",
        "required": ["value", "expires_at", "session"],
        "properties": {
            "value": STRING,
            "expires_at": {"type": "integer"},
            "session": ANY_OBJECT,
        },
    },
}

CALL_SCHEMAS: dict[str, Json] = {
    "RealtimeCallUpload": {
        "type": "object",
        "required": ["sdp"],
        "properties": {
            "sdp": {"type": "string", "description": "The WebRTC SDP offer (v=0 ...)."},
            "session": {
                "type": "string",
                "contentMediaType": "application/json",
                "description": "The GA session object as JSON (type realtime, model, ...).",
            },
        },
    },
}

PARAMS: dict[str, tuple[str, ...]] = {
    "realtime_socket.RealtimeSocketHandler": ("session_id",),
    "realtime_calls.RealtimeCallHangupHandler": ("call_id",),
}

OPS: dict[str, dict[str, Op]] = {
    "realtime_secrets.RealtimeSessionsHandler": {
        "post": Op(
            "Create a realtime session and its one-use client secret.",
            ref("RealtimeSession"),
            body="RealtimeSessionRequest",
        )
    },
    "realtime_socket.RealtimeSocketHandler": {
        "get": Op(
            "The realtime WebSocket (upgrade only): with a virtual key and ?model=, at a "
            "session's URL with its client secret, or with ?call_id= as the sideband of a "
            "WebRTC call this key made.",
            None,
            status=101,
            query=(q("model", STRING), q("call_id", STRING)),
        )
    },
    "realtime_secrets.RealtimeClientSecretsHandler": {
        "post": Op(
            "Mint a single-use client secret for a browser's realtime session (GA).",
            ref("ClientSecret"),
            body="ClientSecretRequest",
        )
    },
    "realtime_calls.RealtimeCallsHandler": {
        "post": Op(
            "Start a WebRTC realtime call: the SDP offer (multipart sdp + session, or "
            "application/sdp with a client secret) in, the provider's SDP answer out "
            "(201, Location names the call).",
            None,
            status=201,
            body="RealtimeCallUpload",
            body_type="multipart/form-data",
            other_types={"application/sdp": TEXT},
            also=(409,),
        )
    },
    "realtime_calls.RealtimeCallHangupHandler": {
        "post": Op("End a WebRTC realtime call this key made.", None, also=(409,))
    },
}
