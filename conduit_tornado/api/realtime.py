"""POST /v1/realtime/sessions, and the WebSocket relay at /v1/realtime/sessions/{id}/ws and
/v1/realtime?model= (what the openai SDK's ``client.realtime.connect`` opens)."""

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
    client_secret_object,
    session_object,
    validate_config,
    validate_session,
)
from conduit_tornado.context import Context
from conduit_tornado.core import meters
from conduit_tornado.core.errors import ApiError, invalid_api_key
from conduit_tornado.metering.pricing import realtime_cost
from conduit_tornado.metering.recorder import new_log_entry
from conduit_tornado.routing.catalog import ModelRoute
from conduit_tornado.routing.realtime import Frame, RealtimeSocket
from conduit_tornado.routing.router import Outcome, Target
from conduit_tornado.routing.upstream import Timeouts
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


class RealtimeClientSecretsHandler(ClientHandler):
    """POST /v1/realtime/client_secrets (the GA API): a single-use secret, bound to this
    key and model, that a browser uses to open /v1/realtime?model= as it would OpenAI's."""

    async def post(self) -> None:
        body = self.json_body()
        session = body.get("session") or {"type": "realtime"}
        config = validate_session(session)
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
        self._opened = False
        self._totals = {"responses": 0, "input_tokens": 0, "output_tokens": 0, "cost": 0.0}

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

            async def connect(target: Target, t: Timeouts) -> RealtimeSocket:
                return await target.adapter.realtime(target.model, t, limit)

            self.upstream, self.outcome = await ctx.router.run(route, connect)
        except BaseException:
            await ctx.limiter.release(self.grant)
            self.grant = None
            raise

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
            await self.upstream.send(message)

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
            if (
                frame.kind == "text"
                and isinstance(frame.data, str)
                and '"response.done"' in frame.data
            ):
                await self._bill(frame.data)

    async def _bill(self, data: str) -> None:
        """Usage and cost from response.done: logged, charged, and the budget enforced."""
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        response = event.get("response") or {}
        usage = response.get("usage") or {}
        if event.get("type") != "response.done" or not usage:
            return
        assert self.outcome is not None and self.key is not None and self.session is not None
        target = self.outcome.target
        rates = self.ctx.media_prices.realtime(
            target.model, target.deployment.get("pricing") or target.route.pricing
        )
        cost = realtime_cost(rates, usage) if rates else (0.0 if target.adapter.free else None)
        inp, out = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
        self._totals["responses"] += 1
        self._totals["input_tokens"] += inp
        self._totals["output_tokens"] += out
        self._totals["cost"] += cost or 0.0
        entry = new_log_entry(
            self.request_id,
            self.ctx.clock.now(),
            self.key,
            "realtime",
            self.session["model"],
            stream=True,
            user=None,
        )
        self.ctx.recorder.record(
            {
                **entry,
                "provider": target.provider.name,
                "deployment": target.model,
                "session_id": self.session["_id"],
                "response_id": response.get("id"),
                "prompt_tokens": inp,
                "completion_tokens": out,
                "cached_tokens": int(
                    (usage.get("input_token_details") or {}).get("cached_tokens") or 0
                ),
                "total_tokens": inp + out,
                "cost": cost,
                "unpriced": cost is None,
                "estimated": False,
                "client_ip": self.request.remote_ip,
            }
        )
        if not cost or self.grant is None:
            return
        exhausted = None
        for budget in self.grant.budgets:
            try:
                charge = await self.ctx.limiter.budgets.add_spend(budget, cost)
            except StoreUnavailable as exc:
                # The session goes on; the charge goes with the settlement batches, written
                # when the store is back (and this response's budget check is skipped).
                log.warning("realtime charge to %s %s deferred: %s", budget.kind, budget.name, exc)
                self.ctx.limiter.charge_later(budget, cost)
                continue
            if charge is None:
                continue
            await self.ctx.alerts.check([charge])
            if budget.max_budget is not None and charge.after >= budget.max_budget:
                exhausted = budget
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
        if self.session is not None:
            try:
                await self.ctx.realtime.ended(self.session["_id"], dict(self._totals))
            except StoreUnavailable as exc:  # its responses are in the request logs anyway
                log.warning("realtime session %s: end not recorded: %s", self.session["_id"], exc)
