"""WebRTC realtime calls: POST /v1/realtime/calls (the SDP offer in, the provider's
answer out), the gateway's own sideband of each call (metering, budget and idle hangups),
and POST /v1/realtime/calls/{call_id}/hangup.

The handlers keep the metrics labels (``metric_route``) they had in api/realtime.py, so
their Prometheus series keep their names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

import orjson

from conduit_tornado.admission.keys import VirtualKey
from conduit_tornado.admission.realtime import SECRET_PREFIX, validate_session
from conduit_tornado.context import Context
from conduit_tornado.core.errors import ApiError, invalid_api_key
from conduit_tornado.routing.realtime import MAX_SDP, RealtimeSocket
from conduit_tornado.routing.router import Target
from conduit_tornado.routing.upstream import ProviderError, Timeouts
from conduit_tornado.server.multipart import MultipartError, MultipartParser, boundary_of
from conduit_tornado.store import StoreUnavailable

from .base import ClientHandler, bearer_token
from .realtime_meter import Meter, billable, realtime_route, route_of

log = logging.getLogger("conduit.realtime")
T = TypeVar("T")


def call_timeouts(ctx: Context) -> Timeouts:
    s = ctx.settings
    return Timeouts(connect=s.connect_timeout, first_byte=None, total=s.request_timeout)


async def provider_call(work: Awaitable[T]) -> T:
    """One call to a call's own provider (pinned: no failover), its failure in OpenAI's
    envelope."""
    try:
        return await work
    except ProviderError as exc:
        raise exc.to_api_error() from None


def call_target(ctx: Context, key: VirtualKey, call: dict[str, Any]) -> Target:
    """The provider deployment a call was made on (a call lives on one provider)."""
    route = route_of(ctx, key, call["model"])
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

    metric_route = "realtime.RealtimeCalls"

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
            route = route_of(ctx, self.key, minted["model"])
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
            route = realtime_route(ctx, self.key, session.get("model"), "session.model")
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
                if billable(frame.data):
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
                self.call["upstream_call_id"], call_timeouts(self.ctx)
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

    metric_route = "realtime.RealtimeCallHangup"

    async def post(self, call_id: str) -> None:
        call = await self.ctx.realtime.get_call(call_id)
        if call is None or call["key_id"] != self.key.id:
            raise ApiError(404, "No such realtime call.", code="call_not_found", param="call_id")
        if call.get("status") == "active":
            target = call_target(self.ctx, self.key, call)
            await provider_call(
                target.adapter.realtime_hangup(call["upstream_call_id"], call_timeouts(self.ctx))
            )
        self.set_status(200)
        self.finish(b"")
