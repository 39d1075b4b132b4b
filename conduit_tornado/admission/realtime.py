"""Realtime sessions: created over HTTP, bound to a key, with a short-lived single-use
client secret stored as a hash."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from conduit_tornado.core.clock import Clock
from conduit_tornado.core.errors import ApiError
from conduit_tornado.core.schemas import MAX_STORED_DEPTH, unstorable
from conduit_tornado.core.security import hash_key, hashes_match
from conduit_tornado.store import Doc, Store

SESSIONS = "realtime_sessions"
CALLS = "realtime_calls"
SECRET_PREFIX = "ek_"  # noqa: S105 (a prefix that marks client secrets, not a secret)
DEFAULTS: dict[str, Any] = {
    "modalities": ["text", "audio"],
    "instructions": "",
    "voice": "alloy",
    "input_audio_format": "pcm16",
    "output_audio_format": "pcm16",
    "input_audio_transcription": None,
    "turn_detection": {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 200,
    },
    "tools": [],
    "tool_choice": "auto",
    "temperature": 0.8,
    "max_response_output_tokens": "inf",
}
_TYPES: dict[str, type | tuple[type, ...]] = {
    "modalities": list,
    "instructions": str,
    "voice": str,
    "input_audio_format": str,
    "output_audio_format": str,
    "turn_detection": (dict, type(None)),
    "tools": list,
    "tool_choice": (str, dict),
    "temperature": (int, float),
    "max_response_output_tokens": (int, str),
    "input_audio_transcription": (dict, type(None)),
}


def validate_config(body: dict[str, Any]) -> dict[str, Any]:
    """The session settings a client chose (unknown fields pass through, for newer APIs)."""
    config = {k: v for k, v in body.items() if k != "model"}
    for name, kinds in _TYPES.items():
        if name in config and not isinstance(config[name], kinds):
            raise ApiError(400, f"Invalid type for {name}.", param=name, code="invalid_type")
    modalities = config.get("modalities", [])
    if not all(isinstance(m, str) for m in modalities) or not set(modalities) <= {
        "text",
        "audio",
    }:
        raise ApiError(400, "modalities may contain 'text' and 'audio'.", param="modalities")
    for name, value in config.items():  # stored, and sent back: nesting is capped
        problem = unstorable(value, MAX_STORED_DEPTH - 1)
        if problem is not None:
            raise ApiError(
                400, f"Invalid value for {name}: {problem}.", param=name, code="invalid_value"
            )
    return config


class RealtimeSessions:
    def __init__(self, store: Store, clock: Clock, secret_ttl: float) -> None:
        self._store = store
        self._clock = clock
        self._ttl = timedelta(seconds=secret_ttl)

    async def create(
        self, key_id: str, model: str, config: dict[str, Any], ttl: float | None = None
    ) -> tuple[Doc, str]:
        """A session and its client secret. The secret names its session before a dot,
        so it can be looked up by id (no index on secrets) and then checked by hash."""
        now = self._clock.now()
        session_id = "sess_" + secrets.token_hex(12)
        secret = f"{SECRET_PREFIX}{session_id}.{secrets.token_urlsafe(32)}"
        doc: Doc = {
            "_id": session_id,
            "key_id": key_id,
            "model": model,
            "config": config,
            "secret_hash": hash_key(secret),
            "secret_expires_at": now + (self._ttl if ttl is None else timedelta(seconds=ttl)),
            "secret_used_at": None,
            "created_at": now,
            "status": "created",
        }
        await self._store.insert(SESSIONS, doc)
        return doc, secret

    async def get(self, session_id: str) -> Doc | None:
        return await self._store.get(SESSIONS, session_id)

    async def by_secret(self, secret: str) -> Doc | None:
        """The session a client secret was issued for (not yet checked: see redeem)."""
        session_id, dot, _ = secret.removeprefix(SECRET_PREFIX).partition(".")
        if not dot or not session_id.startswith("sess_") or len(session_id) > 64:
            return None
        return await self.get(session_id)

    def valid(self, session: Doc, secret: str) -> bool:
        """The secret is this session's and has not expired (it may have been used)."""
        return (
            hashes_match(hash_key(secret), session["secret_hash"])
            and session["secret_expires_at"] > self._clock.now()
        )

    async def redeem(self, session: Doc, secret: str) -> bool:
        """Accept a client secret once, before it expires."""
        if not self.valid(session, secret):
            return False
        used = await self._store.update(
            SESSIONS,
            session["_id"],
            {"secret_used_at": self._clock.now()},
            where={"secret_used_at": None},
        )
        return used is not None  # another connection already redeemed it

    async def create_call(
        self,
        key_id: str,
        model: str,
        config: dict[str, Any],
        provider: str,
        deployment: str,
        upstream_call_id: str,
    ) -> Doc:
        """A WebRTC call, under the gateway's own id (the provider's stays inside): the
        sideband (/v1/realtime?call_id=) and the hangup find it, owned by its key."""
        doc: Doc = {
            "_id": "rtc_" + secrets.token_hex(16),
            "key_id": key_id,
            "model": model,
            "config": config,
            "provider": provider,
            "deployment": deployment,
            "upstream_call_id": upstream_call_id,
            "created_at": self._clock.now(),
            "status": "active",
        }
        await self._store.insert(CALLS, doc)
        return doc

    async def get_call(self, call_id: str) -> Doc | None:
        if not call_id.startswith("rtc_") or len(call_id) > 64:
            return None
        return await self._store.get(CALLS, call_id)

    async def call_ended(self, call_id: str, usage: dict[str, Any]) -> None:
        await self._store.update(
            CALLS, call_id, {"status": "ended", "ended_at": self._clock.now(), **usage}
        )

    async def ended(self, session_id: str, usage: dict[str, Any]) -> None:
        await self._store.update(
            SESSIONS, session_id, {"status": "closed", "ended_at": self._clock.now(), **usage}
        )


def session_object(doc: Doc, secret: str | None, websocket_url: str) -> dict[str, Any]:
    """OpenAI's realtime.session shape, plus where to connect."""
    expires: datetime = doc["secret_expires_at"]
    out: dict[str, Any] = {"id": doc["_id"], "object": "realtime.session", "model": doc["model"]}
    out.update({**DEFAULTS, **doc["config"]})
    if secret is not None:
        out["client_secret"] = {"value": secret, "expires_at": int(expires.timestamp())}
    out["websocket_url"] = websocket_url
    return out


def client_secret_object(doc: Doc, secret: str) -> dict[str, Any]:
    """The GA answer to POST /v1/realtime/client_secrets."""
    expires = int(doc["secret_expires_at"].timestamp())
    config = doc["config"]
    if config.get("type") == "transcription":
        session = {
            "id": doc["_id"],
            "object": "realtime.transcription_session",
            "expires_at": expires,
            **config,
        }
    else:
        session = {
            "id": doc["_id"],
            "object": "realtime.session",
            "type": "realtime",
            "model": doc["model"],
            "expires_at": expires,
            **{k: v for k, v in config.items() if k not in ("type", "model")},
        }
    return {"value": secret, "expires_at": expires, "session": session}


TRANSCRIPTION_MODEL = "session.audio.input.transcription.model"


def transcription_model(session: dict[str, Any]) -> Any:
    """The model of a transcription session (audio.input.transcription.model), or None."""
    audio = session.get("audio")
    heard = audio.get("input") if isinstance(audio, dict) else None
    transcription = heard.get("transcription") if isinstance(heard, dict) else None
    return transcription.get("model") if isinstance(transcription, dict) else None


def with_transcription_model(config: dict[str, Any], model: str) -> dict[str, Any]:
    """A transcription session's settings with its model replaced (the provider gets its
    deployment's name, never the virtual one)."""
    audio = dict(config.get("audio") or {})
    heard = dict(audio.get("input") or {})
    heard["transcription"] = {**(heard.get("transcription") or {}), "model": model}
    audio["input"] = heard
    return {**config, "audio": audio}


def validate_session(session: Any) -> dict[str, Any]:
    """A GA session configuration, as the provider will get it: a realtime session
    (session.type 'realtime'; its model is session.model) or a transcription session
    ('transcription'; its model is audio.input.transcription.model)."""
    if not isinstance(session, dict):
        raise ApiError(400, "session must be an object.", param="session", code="invalid_type")
    kind = session.get("type", "realtime")
    if kind not in ("realtime", "transcription"):
        raise ApiError(
            400,
            "session.type must be 'realtime' or 'transcription'.",
            param="session.type",
            code="unsupported_value",
        )
    config = {k: v for k, v in session.items() if k != "model"}
    config["type"] = kind
    if kind == "transcription" and "model" in session:
        raise ApiError(
            400,
            f"A transcription session names its model in {TRANSCRIPTION_MODEL}.",
            param="session.model",
            code="invalid_value",
        )
    for name, value in config.items():  # stored, and sent back: what no store can hold
        problem = unstorable(value, MAX_STORED_DEPTH - 1)
        if problem:
            raise ApiError(
                400,
                f"Invalid value for session.{name}: {problem}.",
                param=f"session.{name}",
                code="invalid_value",
            )
    return config
