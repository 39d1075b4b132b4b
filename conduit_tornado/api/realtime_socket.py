"""The realtime WebSocket: /v1/realtime?model= (what the openai SDK's
``client.realtime.connect`` opens), /v1/realtime/sessions/{id}/ws, and /v1/realtime?call_id=
(a client's own sideband of a WebRTC call it made). Authenticates and opens the provider's
socket before accepting the upgrade, then relays frames both ways and meters them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Any

import orjson
import tornado.websocket

from conduit_tornado.admission.keys import VirtualKey
from conduit_tornado.admission.limits import Grant
from conduit_tornado.admission.realtime import (
    SECRET_PREFIX,
    transcription_model,
    with_transcription_model,
)
from conduit_tornado.context import Context
from conduit_tornado.core import meters
from conduit_tornado.core.errors import ApiError, invalid_api_key
from conduit_tornado.routing.realtime import Frame, RealtimeSocket
from conduit_tornado.routing.router import Outcome, Target
from conduit_tornado.routing.upstream import Timeouts
from conduit_tornado.store import StoreUnavailable

from .base import ApiResponses, bearer_token
from .realtime_calls import call_target, call_timeouts, provider_call
from .realtime_meter import Meter, billable, route_of

log = logging.getLogger("conduit.realtime")
BROWSER_AUTH = "openai-insecure-api-key."
SENDABLE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011}) | frozenset(
    range(3000, 5000)
)


class RealtimeSocketHandler(ApiResponses, tornado.websocket.WebSocketHandler):
    """Authenticates and opens the provider's socket before accepting the upgrade, so every
    refusal is a plain HTTP error in OpenAI's envelope; then relays frames both ways."""

    def initialize(self) -> None:
        self.ctx: Context = self.application.settings["conduit"]
        self.upstream: RealtimeSocket | None = None
        self.outcome: Outcome | None = None
        self.grant: Grant | None = None
        self.session: dict[str, Any] | None = None
        self.key: VirtualKey | None = None
        self._pump: asyncio.Task[None] | None = None
        self._idle: asyncio.Task[None] | None = None
        self._last = time.monotonic()
        self._closing = False
        self.meter: Meter | None = None
        self.transcription = False  # a transcription session (intent=transcription)
        self.call: dict[str, Any] | None = None  # a WebRTC call's sideband (?call_id=)
        self._opened = False
        self._refused: str | None = None  # the error code of a refused upgrade, for its span
        traces = self.ctx.tracing  # None unless tracing is on: then this is all it costs
        # One span for the whole session, from the upgrade request to the last frame.
        self.trace = (
            None
            if traces is None
            else traces.start_request(
                "GET", self.request.path, self.request.headers, time.perf_counter()
            )
        )

    def _token(self) -> str | None:
        token = bearer_token(self) or self.get_query_argument("token", None)
        if token:
            return token
        offered = [
            p.strip()
            for p in self.request.headers.get("Sec-WebSocket-Protocol", "").split(",")
            if p.strip()
        ]
        return next((p[len(BROWSER_AUTH) :] for p in offered if p.startswith(BROWSER_AUTH)), None)

    async def prepare(self) -> None:
        self.refuse_loops()
        if self.trace is not None:
            self.trace.enter()  # the router's connect attempts become its children
        if self.request.headers.get("Upgrade", "").lower() != "websocket":
            raise ApiError(
                400, "This endpoint only accepts WebSocket upgrades.", code="websocket_required"
            )
        token = self._token()
        ctx = self.ctx
        session_id = self.path_args[0] if self.path_args else None
        call_id = self.get_query_argument("call_id", None)
        if session_id is None and call_id is not None:
            await self._attach_call(call_id, token)
            return
        if session_id is None and token and token.startswith(SECRET_PREFIX):
            # /v1/realtime?model= with a client secret (the GA flow, from a browser).
            session = await ctx.realtime.by_secret(token)
            if session is None or not ctx.realtime.valid(session, token):
                raise invalid_api_key("The client secret is invalid, expired or already used.")
            asked = self.get_query_argument("model", None)
            if asked is not None and asked != session["model"]:
                # Checked before the secret is spent: a wrong URL does not burn it.
                raise ApiError(
                    403,
                    f"This client secret was issued for another model than {asked!r}.",
                    code="model_not_allowed",
                    param="model",
                )
            if not await ctx.realtime.redeem(session, token):
                raise invalid_api_key("The client secret is invalid, expired or already used.")
            self.key = await ctx.keys.by_id(session["key_id"])
            self.session = session
            route = route_of(ctx, self.key, session["model"])
        elif session_id is None:  # /v1/realtime?model=: the SDK's connect, with a virtual key
            self.key = await ctx.keys.authenticate(token)
            route = route_of(ctx, self.key, self.get_query_argument("model", None))
            self.session, _ = await ctx.realtime.create(self.key.id, route.name, {})
        else:
            session = await ctx.realtime.get(session_id)
            if session is None:
                raise ApiError(404, "No such realtime session.", code="session_not_found")
            if token and token.startswith(SECRET_PREFIX):
                if not await ctx.realtime.redeem(session, token):
                    raise invalid_api_key("The client secret is invalid, expired or already used.")
                self.key = await ctx.keys.by_id(session["key_id"])
            else:
                self.key = await ctx.keys.authenticate(token)
                if self.key.id != session["key_id"]:
                    raise ApiError(404, "No such realtime session.", code="session_not_found")
            self.session = session
            route = route_of(ctx, self.key, session["model"])
        if self.trace is not None:
            self.trace.model_request("realtime", route.name, {})  # never the session's text
        if not self.key.allows_ip(self.request.remote_ip or ""):
            raise ApiError(
                403,
                "Requests from this address are not allowed for this key.",
                code="ip_not_allowed",
            )
        self.grant = await ctx.limiter.admit(self.key.doc, route.name, None, 0)
        try:
            if self.key.doc.get("max_realtime_sessions"):
                await ctx.limiter.hold(
                    self.grant,
                    f"rt/{self.key.id}",
                    int(self.key.doc["max_realtime_sessions"]),
                    "realtime sessions of this key",
                )
            limit = ctx.settings.realtime_max_message_bytes

            self.transcription = (self.session.get("config") or {}).get(
                "type"
            ) == "transcription" or self.get_query_argument("intent", None) == "transcription"
            transcription = self.transcription

            async def connect(target: Target, t: Timeouts) -> RealtimeSocket:
                if transcription:
                    return await target.adapter.realtime_transcription(target.model, t, limit)
                return await target.adapter.realtime(target.model, t, limit)

            self.upstream, self.outcome = await ctx.router.run(route, connect)
        except BaseException:
            await ctx.limiter.release(self.grant)
            self.grant = None
            raise
        self.meter = Meter(
            ctx,
            self.key,
            self.session["model"],
            self.outcome,
            self.grant,
            self.request_id,
            self.request.remote_ip,
            {"session_id": self.session["_id"]},
        )

    async def _attach_call(self, call_id: str, token: str | None) -> None:
        """/v1/realtime?call_id=: a client's own sideband of a WebRTC call it made, relayed
        to the provider's sideband for that call. Not metered here: the gateway's own
        sideband (opened with the call) charges every response.done once."""
        ctx = self.ctx
        self.key = await ctx.keys.authenticate(token)
        call = await ctx.realtime.get_call(call_id)
        if call is None or call["key_id"] != self.key.id:
            raise ApiError(404, "No such realtime call.", code="call_not_found", param="call_id")
        if call.get("status") != "active":
            raise ApiError(409, "This realtime call has ended.", code="call_ended", param="call_id")
        if not self.key.allows_ip(self.request.remote_ip or ""):
            raise ApiError(
                403,
                "Requests from this address are not allowed for this key.",
                code="ip_not_allowed",
            )
        target = call_target(ctx, self.key, call)
        self.grant = await ctx.limiter.admit(self.key.doc, call["model"], None, 0)
        limit = ctx.settings.realtime_max_message_bytes

        async def connect(target: Target, t: Timeouts) -> RealtimeSocket:
            return await target.adapter.realtime_sideband(call["upstream_call_id"], t, limit)

        if self.trace is not None:
            self.trace.model_request("realtime", call["model"], {})
            connect = self.trace.attempts(connect)  # pinned to the call's provider: one try
        try:
            self.upstream = await provider_call(connect(target, call_timeouts(ctx)))
        except BaseException:
            await ctx.limiter.release(self.grant)
            self.grant = None
            raise
        self.outcome = Outcome(target, 1, 0.0, 0.0)
        self.call = call
        self.session = {"_id": call["_id"], "model": call["model"], "config": {}}

    # Per handler, not application-wide: inside Jupyter these must not touch kernel sockets.
    @property
    def max_message_size(self) -> int:
        return self.ctx.settings.realtime_max_message_bytes

    @property
    def ping_interval(self) -> float:
        return self.ctx.settings.websocket_ping_interval

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return "realtime" if "realtime" in subprotocols else None

    def get_compression_options(self) -> dict[str, Any] | None:
        return None  # audio is not compressible enough to pay for the CPU

    async def open(self, *args: str) -> None:
        assert self.upstream is not None and self.session is not None and self.outcome is not None
        meters.REALTIME_OPEN.n += 1  # dec in _finish, which every opened session reaches
        self._opened = True
        self.set_nodelay(True)
        log.info(
            "realtime session %s opened via %s",
            self.session["_id"],
            self.outcome.target.provider.name,
        )
        config = self.session.get("config") or {}
        if config.get("type") == "transcription":
            config = with_transcription_model(config, self.outcome.target.model)
        if config:
            await self.upstream.send(
                orjson.dumps({"type": "session.update", "session": config}).decode()
            )
        self._pump = asyncio.ensure_future(self._from_upstream())
        self._idle = asyncio.ensure_future(self._watch_idle())

    async def on_message(self, message: str | bytes) -> None:
        # Tornado awaits this before delivering the next message: order is kept.
        self._last = time.monotonic()
        if self.upstream is not None and not self._closing:
            if self.transcription and isinstance(message, str) and "session.update" in message:
                message = await self._transcription_update(message)
                if not message:
                    return
            await self.upstream.send(message)

    async def _transcription_update(self, message: str) -> str:
        """A transcription session names its model in session.update: the client names
        the virtual model (the one admitted), the provider gets its deployment's."""
        try:
            event = orjson.loads(message)
        except orjson.JSONDecodeError:
            return message  # the provider answers it with its own error event
        if not isinstance(event, dict) or event.get("type") != "session.update":
            return message
        session = event.get("session")
        if not isinstance(session, dict):
            return message
        asked = transcription_model(session)
        if asked is None:
            return message
        assert self.session is not None and self.outcome is not None
        if asked != self.session["model"]:
            await self.send_error_event(
                "model_not_allowed",
                f"This session was opened for {self.session['model']!r}, not {asked!r}.",
            )
            return ""
        event["session"] = with_transcription_model(session, self.outcome.target.model)
        return orjson.dumps(event).decode()

    async def _from_upstream(self) -> None:
        assert self.upstream is not None
        while True:
            frame: Frame = await self.upstream.receive()
            self._last = time.monotonic()
            if frame.kind == "close":
                code = frame.code if frame.code in SENDABLE else 1011
                reason = frame.reason or (
                    "upstream closed" if frame.code in SENDABLE else "upstream connection lost"
                )
                self._shutdown(code, reason, upstream_gone=True)
                return
            if frame.data is None:
                continue
            try:
                await self.write_message(frame.data, binary=frame.kind == "binary")
            except tornado.websocket.WebSocketClosedError:
                return
            if frame.kind == "text" and isinstance(frame.data, str) and billable(frame.data):
                await self._bill(frame.data)

    async def _bill(self, data: str) -> None:
        """Usage and cost from response.done: logged, charged, and the budget enforced."""
        if self.meter is None:
            return  # a client's own sideband of a call: the gateway's sideband meters it
        exhausted = await self.meter.bill(data)
        if exhausted is not None:
            await self.send_error_event(
                "budget_exceeded",
                f"Budget exhausted for {exhausted.kind} '{exhausted.name}'; the session is closed.",
            )
            self._shutdown(1008, "budget exhausted")

    async def send_error_event(
        self, code: str, message: str, type: str = "invalid_request_error"
    ) -> None:
        event = {
            "type": "error",
            "event_id": "event_" + secrets.token_hex(8),
            "error": {
                "type": type,
                "code": code,
                "message": message,
                "param": None,
                "event_id": None,
            },
        }
        with contextlib.suppress(tornado.websocket.WebSocketClosedError):
            await self.write_message(orjson.dumps(event).decode())

    async def _watch_idle(self) -> None:
        idle = self.ctx.settings.realtime_idle_timeout
        while not self._closing:
            await asyncio.sleep(max(0.05, idle - (time.monotonic() - self._last)))
            if time.monotonic() - self._last >= idle:
                await self.send_error_event(
                    "idle_timeout", f"No activity for {idle:g} seconds.", "timeout_error"
                )
                self._shutdown(1000, "idle timeout")
                return

    def _shutdown(self, code: int, reason: str, *, upstream_gone: bool = False) -> None:
        if self._closing:
            return
        self._closing = True
        self.close(code, reason)
        self.ctx.in_flight.spawn(self._finish(None if upstream_gone else (code, reason)))

    def on_close(self) -> None:
        if self._closing:
            return
        self._closing = True
        code = self.close_code if self.close_code in SENDABLE else 1001
        self.ctx.in_flight.spawn(self._finish((code, self.close_reason or "client went away")))

    async def _finish(self, close_upstream: tuple[int, str] | None) -> None:
        if self._opened:
            self._opened = False
            meters.REALTIME_OPEN.n -= 1
        for task in (self._pump, self._idle):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        if self.upstream is not None and close_upstream is not None:
            with contextlib.suppress(Exception):
                await self.upstream.close(*close_upstream)
        if self.grant is not None:
            grant, self.grant = self.grant, None
            self.ctx.limiter.settle(grant, None, None)
        try:
            if self.session is not None and self.meter is not None:
                try:
                    await self.ctx.realtime.ended(self.session["_id"], dict(self.meter.totals))
                except StoreUnavailable as exc:  # its responses are in the request logs anyway
                    log.warning(
                        "realtime session %s: end not recorded: %s", self.session["_id"], exc
                    )
        finally:
            self._end_span()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            self._refused = exc.code
        super().write_error(status_code, **kwargs)

    def on_finish(self) -> None:
        # Tornado finishes the handshake's response too (101): the session goes on, and
        # _finish ends its span. Any other status is a refused upgrade.
        if self.get_status() != 101:
            self._end_span()

    def _end_span(self) -> None:
        """The session's span ends with its accounting: the deployment that served it and
        the tokens of every response.done (not their text, not the audio)."""
        trace, self.trace = self.trace, None
        if trace is None:
            return
        entry: dict[str, Any] = {"request_id": self.request_id, "error_code": self._refused}
        if self.key is not None:
            entry["key_id"] = self.key.id
        if self.outcome is not None:
            entry["provider"] = self.outcome.target.provider.name
            entry["deployment"] = self.outcome.target.model
            entry["attempts"] = self.outcome.attempts
        if self.meter is not None:
            totals = self.meter.totals
            entry["prompt_tokens"] = totals["input_tokens"]
            entry["completion_tokens"] = totals["output_tokens"]
            entry["cost"] = totals["cost"]
        trace.finish(self.get_status(), "realtime", entry, None)
