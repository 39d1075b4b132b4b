"""POST /v1/realtime/sessions, and the WebSocket relay at /v1/realtime/sessions/{id}/ws and
/v1/realtime?model= (what the openai SDK's ``client.realtime.connect`` opens)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import orjson
import tornado.websocket

from conduit_tornado.admission.budgets import Budget
from conduit_tornado.admission.keys import VirtualKey
from conduit_tornado.admission.limits import Grant
from conduit_tornado.admission.realtime import (
    SECRET_PREFIX,
    TRANSCRIPTION_MODEL,
    client_secret_object,
    session_object,
    transcription_model,
    validate_config,
    validate_session,
    with_transcription_model,
)
from conduit_tornado.context import Context
from conduit_tornado.core import meters
from conduit_tornado.core.errors import ApiError, invalid_api_key
from conduit_tornado.metering.pricing import realtime_cost
from conduit_tornado.metering.recorder import new_log_entry
from conduit_tornado.routing.catalog import ModelRoute
from conduit_tornado.routing.realtime import MAX_SDP, Frame, RealtimeSocket
from conduit_tornado.routing.router import Outcome, Target
from conduit_tornado.routing.upstream import ProviderError, Timeouts
from conduit_tornado.server.multipart import MultipartError, MultipartParser, boundary_of
from conduit_tornado.store import StoreUnavailable

from .base import ApiResponses, ClientHandler, bearer_token, model_name, resolve_model

log = logging.getLogger("conduit.realtime")
BROWSER_AUTH = "openai-insecure-api-key."
REALTIME_PROVIDERS = frozenset({"openai", "azure", "mock"})  # adapters with a realtime socket
SENDABLE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011}) | frozenset(
    range(3000, 5000)
)


def _route(ctx: Context, key: VirtualKey, model: Any) -> ModelRoute:
    return resolve_model(ctx, key, model_name(model))


def _ws_base(handler: tornado.web.RequestHandler) -> str:
    # The server resolves the scheme (X-Forwarded-Proto only from trusted proxies).
    proto = handler.request.protocol
    return ("wss" if proto == "https" else "ws") + "://" + handler.request.host


def _realtime_route(ctx: Context, key: VirtualKey, model: Any, param: str = "model") -> ModelRoute:
    route = _route(ctx, key, model)
    providers = ctx.catalog.providers
    if not any(
        (p := providers.get(d["provider"])) is not None and p.type in REALTIME_PROVIDERS
        for d in route.deployments
    ):
        raise ApiError(
            400,
            f"The model {route.name!r} has no realtime-capable deployment.",
            code="unsupported_for_model",
            param=param,
        )
    return route


class Meter:
    """Charges a realtime session or call from its provider's ``response.done`` events:
    each one logged (with its session or call id), its cost added to every budget of the
    grant. Shared by the WebSocket relay and the WebRTC call's sideband."""

    def __init__(
        self,
        ctx: Context,
        key: VirtualKey,
        model: str,
        outcome: Outcome,
        grant: Grant | None,
        request_id: str,
        client_ip: str | None,
        ids: dict[str, str],
    ) -> None:
        self.ctx = ctx
        self.key = key
        self.model = model
        self.outcome = outcome
        self.grant = grant
        self.request_id = request_id
        self.client_ip = client_ip
        self.ids = ids  # session_id or call_id, for the log
        self.totals: dict[str, Any] = {
            "responses": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "cost": 0.0,
        }

    async def bill(self, data: str) -> Budget | None:
        """Charge one event if it is a response.done with usage; a budget it exhausted."""
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(event, dict) or event.get("type") not in BILLED:
            return None
        if event["type"] == "response.done":
            response = event.get("response") or {}
            usage = response.get("usage") if isinstance(response, dict) else None
            answer_id = response.get("id") if isinstance(response, dict) else None
        else:  # a transcription session's turn
            usage, answer_id = event.get("usage"), event.get("item_id")
        if not isinstance(usage, dict) or not usage:
            return None
        ctx, target = self.ctx, self.outcome.target
        pricing = target.deployment.get("pricing") or target.route.pricing
        rates = ctx.media_prices.realtime(target.model, pricing)
        media: dict[str, Any] | None = None
        if usage.get("type") == "duration":  # transcription models billed by the minute
            seconds = usage.get("seconds")
            seconds = float(seconds) if isinstance(seconds, int | float) else 0.0
            per_minute = ctx.media_prices.per_minute(target.model, pricing)
            cost = None if per_minute is None else round(per_minute * seconds / 60, 10)
            media = {"audio_seconds": round(seconds, 3)}
        else:
            cost = realtime_cost(rates, usage) if rates else None
        if cost is None and target.adapter.free:
            cost = 0.0
        inp, out = _count(usage.get("input_tokens")), _count(usage.get("output_tokens"))
        details = usage.get("input_token_details")
        cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
        self.totals["responses"] += 1
        self.totals["input_tokens"] += inp
        self.totals["output_tokens"] += out
        self.totals["cost"] += cost or 0.0
        entry = new_log_entry(
            self.request_id,
            ctx.clock.now(),
            self.key,
            "realtime",
            self.model,
            stream=True,
            user=None,
        )
        ctx.recorder.record(
            {
                **entry,
                **self.ids,
                "provider": target.provider.name,
                "deployment": target.model,
                "response_id": answer_id,
                **({"media": media} if media else {}),
                "prompt_tokens": inp,
                "completion_tokens": out,
                "cached_tokens": cached,
                "total_tokens": inp + out,
                "cost": cost,
                "unpriced": cost is None,
                "estimated": False,
                "client_ip": self.client_ip,
            }
        )
        if not cost or self.grant is None:
            return None
        exhausted = None
        for budget in self.grant.budgets:
            try:
                charge = await ctx.limiter.budgets.add_spend(budget, cost)
            except StoreUnavailable as exc:
                # The session goes on; the charge goes with the settlement batches, written
                # when the store is back (and this response's budget check is skipped).
                log.warning("realtime charge to %s %s deferred: %s", budget.kind, budget.name, exc)
                ctx.limiter.charge_later(budget, cost)
                continue
            if charge is None:
                continue
            await ctx.alerts.check([charge])
            if budget.max_budget is not None and charge.after >= budget.max_budget:
                exhausted = budget
        return exhausted


#: The events a realtime session is charged by: a response, or a transcription's turn.
BILLED = frozenset({"response.done", "conversation.item.input_audio_transcription.completed"})


def _billable(data: str) -> bool:
    """Cheap test before parsing: could this text frame be one of BILLED?"""
    return '"response.done"' in data or '"conversation.item.input_audio_transcription.c' in data


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class RealtimeClientSecretsHandler(ClientHandler):
    """POST /v1/realtime/client_secrets (the GA API): a single-use secret, bound to this
    key and model, that a browser uses to open /v1/realtime?model= as it would OpenAI's."""

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
            route = _realtime_route(
                self.ctx, self.key, transcription_model(session), TRANSCRIPTION_MODEL
            )
        else:
            route = _realtime_route(self.ctx, self.key, session.get("model"), "session.model")
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
    async def post(self) -> None:
        body = self.json_body()
        route = _realtime_route(self.ctx, self.key, body.get("model"))
        config = validate_config(body)
        doc, secret = await self.ctx.realtime.create(self.key.id, route.name, config)
        path = self.request.path.rsplit("/sessions", 1)[0] + f"/sessions/{doc['_id']}/ws"
        url = _ws_base(self) + path
        self.send_json(session_object(doc, secret, url))


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
            route = _route(ctx, self.key, session["model"])
        elif session_id is None:  # /v1/realtime?model=: the SDK's connect, with a virtual key
            self.key = await ctx.keys.authenticate(token)
            route = _route(ctx, self.key, self.get_query_argument("model", None))
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
            route = _route(ctx, self.key, session["model"])
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
        try:
            t = _call_timeouts(ctx)
            self.upstream = await _provider_call(
                target.adapter.realtime_sideband(
                    call["upstream_call_id"], t, ctx.settings.realtime_max_message_bytes
                )
            )
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
            if frame.kind == "text" and isinstance(frame.data, str) and _billable(frame.data):
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
        if self.session is not None and self.meter is not None:
            try:
                await self.ctx.realtime.ended(self.session["_id"], dict(self.meter.totals))
            except StoreUnavailable as exc:  # its responses are in the request logs anyway
                log.warning("realtime session %s: end not recorded: %s", self.session["_id"], exc)


# -- WebRTC calls: POST /v1/realtime/calls, the gateway's sideband, the hangup ----------------

T = TypeVar("T")


def _call_timeouts(ctx: Context) -> Timeouts:
    s = ctx.settings
    return Timeouts(connect=s.connect_timeout, first_byte=None, total=s.request_timeout)


async def _provider_call(work: Awaitable[T]) -> T:
    """One call to a call's own provider (pinned: no failover), its failure in OpenAI's
    envelope."""
    try:
        return await work
    except ProviderError as exc:
        raise exc.to_api_error() from None


def call_target(ctx: Context, key: VirtualKey, call: dict[str, Any]) -> Target:
    """The provider deployment a call was made on (a call lives on one provider)."""
    route = _route(ctx, key, call["model"])
    provider = ctx.catalog.providers.get(call["provider"])
    if provider is None:
        raise ApiError(409, "The provider of this call is gone.", code="call_ended")
    deployment = next(
        (
            d
            for d in route.deployments
            if d["provider"] == call["provider"] and d["model"] == call["deployment"]
        ),
        {"provider": call["provider"], "model": call["deployment"]},
    )
    return Target(
        route,
        provider,
        ctx.router.adapter(provider),
        deployment,
        ctx.router.health(provider.name, call["deployment"]),
    )


def _sdp(text: str) -> str:
    if len(text.encode()) > MAX_SDP or not text.startswith("v=0") or "\nm=" not in text:
        raise ApiError(
            400,
            "sdp must be a WebRTC SDP offer (application/sdp text starting with v=0).",
            param="sdp",
            code="invalid_sdp",
        )
    return text


class RealtimeCallsHandler(ClientHandler):
    """POST /v1/realtime/calls (``client.realtime.calls.create``): the SDP offer, as
    application/sdp or multipart (``sdp`` and ``session``), with a virtual key or a client
    secret minted by /v1/realtime/client_secrets. The offer goes to the provider; before
    its SDP answer goes back (201, Location: /v1/realtime/calls/{call_id}), the gateway
    opens the provider's sideband socket for the call, on which it meters every
    response.done and hangs the call up when a budget runs out."""

    secret_session: dict[str, Any] | None = None

    async def authenticate(self) -> None:
        token = bearer_token(self)
        if not (token and token.startswith(SECRET_PREFIX)):
            await super().authenticate()
            return
        session = await self.ctx.realtime.by_secret(token)
        if session is None or not self.ctx.realtime.valid(session, token):
            raise invalid_api_key("The client secret is invalid, expired or already used.")
        self.key = await self.ctx.keys.by_id(session["key_id"])
        if not self.key.allows_ip(self.request.remote_ip or ""):
            raise ApiError(
                403,
                "Requests from this address are not allowed for this key.",
                code="ip_not_allowed",
            )
        self.secret_session = session
        self.secret = token

    def _offer(self) -> tuple[str, dict[str, Any] | None]:
        """(the SDP offer, the session object if one was sent)."""
        content_type = self.request.headers.get("Content-Type", "")
        kind = content_type.split(";", 1)[0].strip().lower()
        raw = self.body
        if kind == "application/sdp":
            return _sdp(raw.decode("utf-8", "replace")), None
        if kind != "multipart/form-data":
            raise ApiError(
                400,
                "Send the SDP offer as application/sdp, or as multipart/form-data with 'sdp' "
                "and 'session' fields.",
                param="sdp",
                code="invalid_sdp",
            )
        try:
            parser = MultipartParser(boundary_of(content_type), file_fields=frozenset())
            parser.feed(raw)
            parts = parser.close()
        except MultipartError as exc:
            raise ApiError(400, f"Invalid upload: {exc}.", code="invalid_multipart") from None
        sdp = parts.get("sdp")
        if sdp is None:
            raise ApiError(400, "The 'sdp' field is required.", param="sdp", code="invalid_sdp")
        session: Any = None
        if "session" in parts:
            try:
                session = orjson.loads(parts["session"].data)
            except orjson.JSONDecodeError:
                raise ApiError(
                    400, "session must be a JSON object.", param="session", code="invalid_type"
                ) from None
            if not isinstance(session, dict):
                raise ApiError(
                    400, "session must be a JSON object.", param="session", code="invalid_type"
                )
        return _sdp(sdp.text), session

    async def post(self) -> None:
        ctx = self.ctx
        sdp, session = self._offer()
        minted = self.secret_session
        if minted is not None:
            # The secret's session decides the model; a session sent along may add settings.
            asked = (session or {}).get("model")
            if asked is not None and asked != minted["model"]:
                raise ApiError(
                    403,
                    f"This client secret was issued for another model than {asked!r}.",
                    code="model_not_allowed",
                    param="session.model",
                )
            if minted["config"].get("type") == "transcription":
                raise ApiError(
                    400,
                    "This client secret is for a transcription session; WebRTC calls need a "
                    "realtime session.",
                    param="session.type",
                    code="unsupported_value",
                )
            sent = {k: v for k, v in (session or {}).items() if k != "model"}
            config = {**minted["config"], **validate_session(sent)}
            route = _route(ctx, self.key, minted["model"])
        else:
            if session is None or not session.get("model"):
                raise ApiError(
                    400,
                    "session.model is required (or authenticate with a client secret).",
                    param="session.model",
                    code="missing_required_parameter",
                )
            config = validate_session(session)
            if config["type"] != "realtime":
                raise ApiError(
                    400,
                    "WebRTC calls need a realtime session (session.type 'realtime').",
                    param="session.type",
                    code="unsupported_value",
                )
            route = _realtime_route(ctx, self.key, session.get("model"), "session.model")
        if minted is not None and not await ctx.realtime.redeem(minted, self.secret):
            raise invalid_api_key("The client secret is invalid, expired or already used.")
        grant = await ctx.limiter.admit(self.key.doc, route.name, None, 0)
        self.put_headers(grant.headers)
        sideband: RealtimeSocket | None = None
        try:
            if self.key.doc.get("max_realtime_sessions"):
                await ctx.limiter.hold(
                    grant,
                    f"rt/{self.key.id}",
                    int(self.key.doc["max_realtime_sessions"]),
                    "realtime sessions of this key",
                )
            limit = ctx.settings.realtime_max_message_bytes

            async def offer(target: Target, t: Timeouts) -> tuple[str, str, RealtimeSocket]:
                answer, upstream_id = await target.adapter.realtime_call(
                    sdp, config, target.model, t
                )
                try:
                    band = await target.adapter.realtime_sideband(upstream_id, t, limit)
                except ProviderError:
                    # A call the gateway cannot meter is not let through: end it.
                    with contextlib.suppress(ProviderError):
                        await target.adapter.realtime_hangup(upstream_id, t)
                    raise
                return answer, upstream_id, band

            (answer, upstream_id, sideband), outcome = await ctx.router.run(route, offer)
            target = outcome.target
            call = await ctx.realtime.create_call(
                self.key.id,
                route.name,
                config,
                str(target.deployment["provider"]),
                target.model,
                upstream_id,
            )
        except BaseException:
            if sideband is not None:
                with contextlib.suppress(Exception):
                    await sideband.close(1011, "call not recorded")
            await ctx.limiter.release(grant)
            raise
        meter = Meter(
            ctx,
            self.key,
            route.name,
            outcome,
            grant,
            self.request_id,
            self.request.remote_ip,
            {"call_id": call["_id"]},
        )
        band = CallSideband(ctx, call, sideband, meter)
        ctx.in_flight.start_run(f"realtime-call/{call['_id']}", band.run())
        log.info("realtime call %s via %s", call["_id"], target.provider.name)
        self.set_status(201)
        self.set_header("Content-Type", "application/sdp")
        self.set_header("Location", f"{self.request.path.rstrip('/')}/{call['_id']}")
        self.finish(answer)


class CallSideband:
    """The gateway's own sideband of a WebRTC call: reads the provider's events for the
    call, charges each response.done, and hangs the call up when a budget runs out or
    nothing has happened for CONDUIT_REALTIME_IDLE_TIMEOUT. Holds the call's admission
    (its realtime-session slot) until the call ends."""

    def __init__(
        self, ctx: Context, call: dict[str, Any], socket: RealtimeSocket, meter: Meter
    ) -> None:
        self.ctx = ctx
        self.call = call
        self.socket = socket
        self.meter = meter
        self.ended_by: str = "provider"

    async def run(self) -> None:
        idle = self.ctx.settings.realtime_idle_timeout
        try:
            while True:
                try:
                    async with asyncio.timeout(idle):
                        frame = await self.socket.receive()
                except TimeoutError:
                    self.ended_by = "idle"
                    await self._hangup()
                    break
                if frame.kind == "close":
                    break
                if frame.kind != "text" or not isinstance(frame.data, str):
                    continue
                if _billable(frame.data):
                    exhausted = await self.meter.bill(frame.data)
                    if exhausted is not None:
                        self.ended_by = "budget"
                        log.info(
                            "realtime call %s: budget of %s %s exhausted; hanging up",
                            self.call["_id"],
                            exhausted.kind,
                            exhausted.name,
                        )
                        await self._hangup()
                        break
        except asyncio.CancelledError:
            self.ended_by = "gateway stopped"
            await self._hangup()
            raise
        finally:
            await self._end()

    async def _hangup(self) -> None:
        target = self.meter.outcome.target
        try:
            await target.adapter.realtime_hangup(
                self.call["upstream_call_id"], _call_timeouts(self.ctx)
            )
        except ProviderError as exc:
            log.warning("realtime call %s: hangup failed: %s", self.call["_id"], exc.kind)

    async def _end(self) -> None:
        with contextlib.suppress(Exception):
            await self.socket.close(1000, "call ended")
        grant, self.meter.grant = self.meter.grant, None
        if grant is not None:
            self.ctx.limiter.settle(grant, None, None)
        try:
            await self.ctx.realtime.call_ended(
                self.call["_id"], {**self.meter.totals, "ended_by": self.ended_by}
            )
        except StoreUnavailable as exc:  # its responses are in the request logs anyway
            log.warning("realtime call %s: end not recorded: %s", self.call["_id"], exc)


class RealtimeCallHangupHandler(ClientHandler):
    """POST /v1/realtime/calls/{call_id}/hangup: ends a call this key made."""

    async def post(self, call_id: str) -> None:
        call = await self.ctx.realtime.get_call(call_id)
        if call is None or call["key_id"] != self.key.id:
            raise ApiError(404, "No such realtime call.", code="call_not_found", param="call_id")
        if call.get("status") == "active":
            target = call_target(self.ctx, self.key, call)
            await _provider_call(
                target.adapter.realtime_hangup(call["upstream_call_id"], _call_timeouts(self.ctx))
            )
        self.set_status(200)
        self.finish(b"")
