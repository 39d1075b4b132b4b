"""The realtime API's sessions for browsers: POST /v1/realtime/client_secrets (GA: a
single-use secret for /v1/realtime?model= or a WebRTC call) and POST /v1/realtime/sessions
(beta: a session and the URL of its socket).

The handlers keep the metrics labels (``metric_route``) they had in api/realtime.py, so
their Prometheus series keep their names.
"""

from __future__ import annotations

import tornado.web

from conduit_tornado.admission.realtime import (
    TRANSCRIPTION_MODEL,
    client_secret_object,
    session_object,
    transcription_model,
    validate_config,
    validate_session,
)
from conduit_tornado.core.errors import ApiError

from .base import ClientHandler
from .realtime_meter import realtime_route


def _ws_base(handler: tornado.web.RequestHandler) -> str:
    # The server resolves the scheme (X-Forwarded-Proto only from trusted proxies).
    proto = handler.request.protocol
    return ("wss" if proto == "https" else "ws") + "://" + handler.request.host


class RealtimeClientSecretsHandler(ClientHandler):
    """POST /v1/realtime/client_secrets (the GA API): a single-use secret, bound to this
    key and model, that a browser uses to open /v1/realtime?model= as it would OpenAI's."""

    metric_route = "realtime.RealtimeClientSecrets"

    async def post(self) -> None:
        body = self.json_body()
        session = body.get("session") or {"type": "realtime"}
        config = validate_session(session)
        if config["type"] == "transcription":
            # Bound to the transcription model; the browser opens /v1/realtime?intent=
            # transcription with the secret.
            if not isinstance(transcription_model(session), str):
                raise ApiError(
                    400,
                    f"A transcription session needs {TRANSCRIPTION_MODEL}.",
                    param=TRANSCRIPTION_MODEL,
                    code="missing_required_parameter",
                )
            route = realtime_route(
                self.ctx, self.key, transcription_model(session), TRANSCRIPTION_MODEL
            )
        else:
            route = realtime_route(self.ctx, self.key, session.get("model"), "session.model")
        ttl = None
        expires = body.get("expires_after")
        if expires is not None:
            seconds = expires.get("seconds") if isinstance(expires, dict) else None
            anchor = expires.get("anchor", "created_at") if isinstance(expires, dict) else None
            if anchor != "created_at" or not isinstance(seconds, int) or not 10 <= seconds <= 7200:
                raise ApiError(
                    400,
                    "expires_after needs anchor 'created_at' and seconds from 10 to 7200.",
                    param="expires_after",
                )
            ttl = float(seconds)
        doc, secret = await self.ctx.realtime.create(self.key.id, route.name, config, ttl)
        self.send_json(client_secret_object(doc, secret))


class RealtimeSessionsHandler(ClientHandler):
    metric_route = "realtime.RealtimeSessions"

    async def post(self) -> None:
        body = self.json_body()
        route = realtime_route(self.ctx, self.key, body.get("model"))
        config = validate_config(body)
        doc, secret = await self.ctx.realtime.create(self.key.id, route.name, config)
        path = self.request.path.rsplit("/sessions", 1)[0] + f"/sessions/{doc['_id']}/ws"
        url = _ws_base(self) + path
        self.send_json(session_object(doc, secret, url))
