"""From a virtual model to a deployment: strategies, retries, fallbacks, cooldown.

A request walks a *plan*: the model's deployments (lowest priority number first, ordered
within a priority by the model's strategy, cooled-down ones last), then each fallback
model's plan. Retryable failures move to the next target (the same one again, after an
exponential backoff with full jitter, once the plan is used up), all within one deadline.

Work is counted per request, in upstream calls: one try on a target costs as many calls
as the request fans out into there (``calls``: prompts x n on providers without n, at
most ``max_fanout``). Every target in the plan gets one try; beyond that, retries may
spend ``max_retries`` calls more, for the whole request. So a request makes at most
``max(k x D, k + max_retries)`` upstream calls, k its largest fan-out and D the targets
in its plan. A target that refuses the gateway's credentials (401/403), or says it has no
such path or model (404/405), is not tried again within the request: it would answer the
same again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from conduit_tornado.core import meters, scrub, tracing
from conduit_tornado.core.errors import ApiError
from conduit_tornado.core.settings import Settings

from .catalog import Catalog, ModelRoute, Provider
from .providers import Adapter, make_adapter
from .upstream import ProviderError, Timeouts, Upstream

log = logging.getLogger("conduit.routing")
T = TypeVar("T")
_EWMA_ALPHA = 0.3


@dataclass(slots=True)
class Health:
    in_flight: int = 0
    ewma_ms: float | None = None
    failures: int = 0
    cooled_until: float = 0.0
    # What the last active health check found (routing/health.py); None: never checked.
    healthy: bool | None = None
    checked_at: float | None = None  # wall-clock seconds
    check_error: str | None = None

    def shunned(self, now: float) -> bool:
        """Tried only after the others: cooled down, or failing its health checks."""
        return self.cooled_until > now or self.healthy is False


@dataclass(slots=True)
class Target:
    route: ModelRoute  # the model this deployment belongs to (differs on fallback)
    provider: Provider
    adapter: Adapter
    deployment: dict[str, Any]
    health: Health

    @property
    def model(self) -> str:
        return str(self.deployment["model"])


@dataclass(slots=True)
class Outcome:
    target: Target
    attempts: int
    upstream_seconds: float
    waited_seconds: float


class RoutingFailed(ApiError):
    """A request no target answered: the client's error, naming the provider (by its
    configured name) of the last try, with what was tried for the headers and the log."""

    def __init__(self, exc: ProviderError, outcome: Outcome) -> None:
        target = outcome.target
        error = exc.to_api_error(target.provider.name, target.model, target.adapter.base_url_hint)
        super().__init__(
            error.status,
            error.message,
            code=error.code,
            param=error.param,
            type=error.type,
            headers={
                **error.headers,
                "x-conduit-provider": target.provider.name,
                "x-conduit-model": target.model,
                "x-conduit-attempts": str(outcome.attempts),
            },
        )
        self.outcome = outcome


def credentials(provider: Provider) -> list[str | None]:
    """The provider's key, and its header values that look like credentials."""
    return [
        provider.api_key,
        *(
            value
            for name, value in provider.headers.items()
            if any(word in name.lower() for word in ("key", "token", "auth", "secret"))
        ),
    ]


class Router:
    def __init__(
        self,
        catalog: Catalog,
        upstream: Upstream,
        settings: Settings,
        rng: random.Random | None = None,
    ) -> None:
        self._catalog = catalog
        self._upstream = upstream
        self._settings = settings
        self._rng = rng or random.Random()  # noqa: S311 (load balancing, not security)
        self._health: dict[tuple[str, str], Health] = {}
        self._adapters: dict[str, tuple[Provider, Adapter]] = {}
        self._turns: dict[str, int] = {}
        # Per model: its usable targets grouped by priority, built once per catalog
        # snapshot (a refresh replaces the route and provider objects, never edits them).
        self._groups: dict[str, tuple[ModelRoute, dict[str, Provider], list[list[Target]]]] = {}

    @property
    def deployments(self) -> dict[tuple[str, str], Health]:
        """Every deployment's state by (provider, upstream model): metrics, admin API."""
        return self._health

    def health(self, provider: str, model: str) -> Health:
        health = self._health.get((provider, model))
        if health is None:
            health = self._health[(provider, model)] = Health()
        return health

    def adapter(self, provider: Provider) -> Adapter:
        cached = self._adapters.get(provider.name)
        if cached is None or cached[0] is not provider:  # the catalog replaced it: rebuild
            scrub.remember(credentials(provider))  # out of every log, span and error text
            cached = (provider, make_adapter(provider, self._upstream))
            self._adapters[provider.name] = cached
        return cached[1]

    def targets(self, route: ModelRoute) -> list[Target]:
        providers = self._catalog.providers
        cached = self._groups.get(route.name)
        if cached is None or cached[0] is not route or cached[1] is not providers:
            cached = (route, providers, self._priority_groups(route))
            self._groups[route.name] = cached
        groups = cached[2]
        if len(groups) == 1:
            return self._order(route, groups[0])
        ordered: list[Target] = []
        for group in groups:
            ordered.extend(self._order(route, group))
        return ordered

    def _priority_groups(self, route: ModelRoute) -> list[list[Target]]:
        usable: list[Target] = []
        for dep in route.deployments:
            provider = self._catalog.providers.get(dep["provider"])
            if provider is None or not provider.enabled:
                continue
            usable.append(
                Target(
                    route,
                    provider,
                    self.adapter(provider),
                    dep,
                    self.health(provider.name, dep["model"]),
                )
            )
        return [
            [t for t in usable if t.deployment.get("priority", 0) == priority]
            for priority in sorted({t.deployment.get("priority", 0) for t in usable})
        ]

    def _order(self, route: ModelRoute, group: list[Target]) -> list[Target]:
        if len(group) < 2:
            return list(group)  # callers extend the plan: never the cached group itself
        strategy = route.strategy
        if strategy == "round_robin":
            turn = self._turns.get(route.name, 0)
            self._turns[route.name] = turn + 1
            start = turn % len(group)
            return group[start:] + group[:start]
        if strategy == "least_busy":
            return sorted(group, key=lambda t: (t.health.in_flight, self._rng.random()))
        if strategy == "lowest_latency":
            # Unmeasured deployments sort first, so every one gets measured.
            return sorted(group, key=lambda t: (t.health.ewma_ms or 0.0, self._rng.random()))
        # Weighted random order without replacement (Efraimidis-Spirakis keys).
        return sorted(
            group,
            key=lambda t: self._rng.random() ** (1.0 / float(t.deployment.get("weight", 1.0))),
            reverse=True,
        )

    def adapters(self, route: ModelRoute) -> list[Adapter]:
        """The adapters a request for this model may reach, fallbacks included, without
        ordering them (no round-robin turn is taken): for checks before admission."""
        out = []
        for name in (route.name, *route.fallbacks):
            model = route if name == route.name else self._catalog.models.get(name)
            if model is None or not model.enabled:
                continue
            for dep in model.deployments:
                provider = self._catalog.providers.get(dep["provider"])
                if provider is not None and provider.enabled:
                    out.append(self.adapter(provider))
        return out

    def plan(self, route: ModelRoute) -> list[Target]:
        plan = self.targets(route)
        for name in route.fallbacks:
            fallback = self._catalog.models.get(name)
            if fallback is not None and fallback.enabled:
                plan.extend(self.targets(fallback))
        # Cooled-down and unhealthy deployments stay in the plan, after every other one
        # (fallbacks included): better a likely failure than no answer at all.
        now = time.monotonic()
        cooled = [t for t in plan if t.health.shunned(now)]
        if not cooled:
            return plan
        return [t for t in plan if not t.health.shunned(now)] + cooled

    def timeouts(self, target: Target, deadline: float) -> Timeouts:
        """Per deployment: connect, first byte and total, within what the request has left."""
        s, dep = self._settings, target.deployment
        left = max(0.001, deadline - time.monotonic())
        return Timeouts(
            connect=float(dep.get("connect_timeout") or s.connect_timeout),
            first_byte=dep.get("first_byte_timeout"),
            total=min(float(dep.get("timeout") or s.request_timeout), left),
        )

    async def run(
        self,
        route: ModelRoute,
        call: Callable[[Target, Timeouts], Awaitable[T]],
        calls: Callable[[Target], int] | None = None,
    ) -> tuple[T, Outcome]:
        """Call targets of the route's plan until one answers. ``calls`` says how many
        upstream calls one try on a target makes (1 if not given); see the module
        docstring for the request's budget."""
        s = self._settings
        trace = tracing.current.get()
        if trace is not None:
            call = trace.attempts(call)  # a CLIENT span per try, carrying traceparent on
        plan = self.plan(route)
        if not plan:
            raise ApiError(
                503,
                f"No provider is available for the model {route.name!r}.",
                code="no_deployment_available",
            )
        deadline = time.monotonic() + s.request_timeout
        if calls is None:  # one call a try: the common case, without a list
            costs = None
            budget = max(len(plan), 1 + s.max_retries)
        else:
            costs = [max(1, calls(t)) for t in plan]
            budget = max(sum(costs), max(costs) + s.max_retries)
        spent = 0
        refused: set[int] = set()  # plan positions that refused our credentials
        outcome = Outcome(plan[0], 0, 0.0, 0.0)
        last: ProviderError | None = None
        failed_provider = ""  # the provider of the last failed try
        attempt = -1
        while True:
            attempt += 1
            at = attempt % len(plan)
            if attempt >= len(plan):
                if len(refused) == len(plan):
                    break
                if at in refused:
                    continue
            cost = 1 if costs is None else costs[at]
            if spent + cost > budget:
                break
            target = plan[at]
            spent += cost
            if attempt >= len(plan):  # second pass over the plan: back off first
                wait = self._backoff(attempt - len(plan), last)
                if time.monotonic() + wait >= deadline:
                    break  # not tried: the outcome keeps naming the last try
                outcome.waited_seconds += wait
                await asyncio.sleep(wait)
            outcome.target, outcome.attempts = target, outcome.attempts + 1
            if last is not None:  # every try after the first follows a failed one
                meters.retried(failed_provider, last.kind)
            started = time.monotonic()
            target.health.in_flight += 1
            try:
                result = await call(target, self.timeouts(target, deadline))
            except orjson.JSONEncodeError:
                # Parsing allowed it (orjson reads 1,024 levels) but it cannot be written
                # back out (254): only a request nested that deep gets here.
                raise ApiError(
                    400,
                    "The request nests objects or arrays too deeply to be forwarded.",
                    code="invalid_value",
                ) from None
            except ProviderError as exc:
                outcome.upstream_seconds += time.monotonic() - started
                failed_provider = target.provider.name
                meters.attempt_failed(failed_provider, exc.kind)
                self._failed(target, exc)
                if not exc.retryable:
                    raise RoutingFailed(exc, outcome) from None
                if exc.kind in exc.SETTLED:
                    refused.add(at)
                last = exc
                if time.monotonic() >= deadline:
                    break
                continue
            finally:
                target.health.in_flight -= 1
            elapsed = time.monotonic() - started
            outcome.upstream_seconds += elapsed
            self._succeeded(target, elapsed)
            meters.attempt_succeeded(target.provider.name)
            return result, outcome
        assert last is not None
        raise RoutingFailed(last, outcome)

    def _backoff(self, retry: int, last: ProviderError | None) -> float:
        s = self._settings
        if last is not None and last.retry_after is not None:
            return min(last.retry_after, s.max_retry_wait)
        return self._rng.uniform(0, min(s.max_retry_wait, s.retry_backoff * 2**retry))

    def _failed(self, target: Target, exc: ProviderError) -> None:
        if exc.kind in ("client", "unsupported"):
            return  # the request's fault, not the deployment's
        h = target.health
        h.failures += 1
        cooldown = self._settings.cooldown_seconds
        if exc.kind == "rate_limit":
            h.cooled_until = time.monotonic() + (exc.retry_after or cooldown)
        elif h.failures >= self._settings.cooldown_failures:
            was_cool = h.cooled_until > time.monotonic()
            h.cooled_until = time.monotonic() + cooldown
            if was_cool:
                return  # said when it began: a failing deployment is one line, not many
            log.warning(
                "deployment %s/%s cooled down for %.0fs after %d failures (%s)",
                target.provider.name,
                target.model,
                cooldown,
                h.failures,
                exc.kind,
            )

    def _succeeded(self, target: Target, seconds: float) -> None:
        h = target.health
        h.failures = 0
        h.cooled_until = 0.0
        ms = seconds * 1000
        h.ewma_ms = ms if h.ewma_ms is None else (1 - _EWMA_ALPHA) * h.ewma_ms + _EWMA_ALPHA * ms
