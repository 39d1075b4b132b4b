"""A realtime session's model and its charges, shared by the WebSocket relay
(api/realtime_socket.py) and WebRTC calls (api/realtime_calls.py): the route of a model
with a realtime-capable deployment, and the Meter that charges each response.done."""

from __future__ import annotations

import logging
from typing import Any

import orjson

from conduit_tornado.admission.budgets import Budget
from conduit_tornado.admission.keys import VirtualKey
from conduit_tornado.admission.limits import Grant
from conduit_tornado.context import Context
from conduit_tornado.core.errors import ApiError
from conduit_tornado.metering.pricing import realtime_cost
from conduit_tornado.metering.recorder import new_log_entry
from conduit_tornado.routing.catalog import ModelRoute
from conduit_tornado.routing.router import Outcome
from conduit_tornado.store import StoreUnavailable

from .base import model_name, resolve_model

log = logging.getLogger("conduit.realtime")
REALTIME_PROVIDERS = frozenset({"openai", "azure", "mock"})  # adapters with a realtime socket


def route_of(ctx: Context, key: VirtualKey, model: Any) -> ModelRoute:
    return resolve_model(ctx, key, model_name(model))


def realtime_route(ctx: Context, key: VirtualKey, model: Any, param: str = "model") -> ModelRoute:
    route = route_of(ctx, key, model)
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


def billable(data: str) -> bool:
    """Cheap test before parsing: could this text frame be one of BILLED?"""
    return '"response.done"' in data or '"conversation.item.input_audio_transcription.c' in data


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
