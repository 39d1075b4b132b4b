"""Deployment health: active checks, and what the router knows, for metrics and the admin API.

With CONDUIT_HEALTH_CHECK_INTERVAL > 0, every interval each provider that serves a
deployment is asked for its model list (Adapter.probe: a GET, no tokens spent), once per
provider however many deployments it serves, and the answer is recorded on each of its
deployments (router.Health). A deployment whose check failed is tried after the others,
as a cooled-down one is (Router.plan), until a check passes again. A deployment with
``health_check: false`` is neither checked nor shunned for its provider's checks.

The state is exported as gauges (per process; with several workers Prometheus'
multiprocess mode takes the worst of the live ones) and listed at
GET /admin/v1/health/deployments, cooldowns included.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Gauge

from conduit_tornado.core.settings import Settings

from .catalog import Catalog, Provider
from .router import Health, Router
from .upstream import ProviderError, Timeouts, Upstream, read_body

log = logging.getLogger("conduit.health")

HEALTHY = Gauge(
    "conduit_deployment_healthy",
    "1 if the deployment's last active health check passed, 0 if it failed.",
    ["provider", "deployment"],
    multiprocess_mode="livemin",
)
COOLDOWN = Gauge(
    "conduit_deployment_cooldown",
    "1 while the deployment is cooled down after failures (tried after the others).",
    ["provider", "deployment"],
    multiprocess_mode="livemax",
)
GAUGE_EVERY = 1.0  # seconds between updates of the cooldown gauge (cooldowns end by time)
PROBE_TIMEOUT = 10.0  # longest a check may take (and never longer than the interval)
_ERROR_MAX = 300


def scrub(message: str, provider: Provider) -> str:
    """An error as shown: without the provider's credentials, however it came to hold
    them (ProviderError messages carry none; this makes sure), and of bounded length."""
    for secret in (provider.api_key, *provider.headers.values()):
        if secret and len(secret) >= 4:
            message = message.replace(secret, "***")
    return message[:_ERROR_MAX]


class HealthChecks:
    def __init__(
        self, catalog: Catalog, router: Router, upstream: Upstream, settings: Settings
    ) -> None:
        self._catalog = catalog
        self._router = router
        self._upstream = upstream
        self._settings = settings
        self._labelled: set[tuple[str, str]] = set()  # gauge children this process set

    def _checked(self) -> dict[str, list[tuple[str, str]]]:
        """The deployments to check, by provider (those not opted out)."""
        out: dict[str, list[tuple[str, str]]] = {}
        for route in self._catalog.models.values():
            for dep in route.deployments:
                if dep.get("health_check") is False:
                    continue
                key = (str(dep["provider"]), str(dep["model"]))
                if key not in out.setdefault(key[0], []):
                    out[key[0]].append(key)
        return out

    async def check_all(self) -> None:
        """One round: each provider checked once, concurrently."""
        providers = self._catalog.providers
        checks = [
            self._check(providers[name], deps)
            for name, deps in self._checked().items()
            if name in providers and providers[name].enabled
        ]
        await asyncio.gather(*checks)

    async def _check(self, provider: Provider, deployments: list[tuple[str, str]]) -> None:
        error = await self._probe(provider)
        now = time.time()
        for key in deployments:
            health = self._router.health(*key)
            if error is not None and health.healthy is not False:
                log.warning("deployment %s/%s failed its health check: %s", *key, error)
            elif error is None and health.healthy is False:
                log.info("deployment %s/%s passed its health check again", *key)
            health.healthy = error is None
            health.checked_at = now
            health.check_error = error
            HEALTHY.labels(*key).set(1 if error is None else 0)
            self._labelled.add(key)

    async def _probe(self, provider: Provider) -> str | None:
        """None if the provider answered the check, else why not (scrubbed)."""
        probe = self._router.adapter(provider).probe()
        if probe is None:
            return None  # the mock: nothing to reach
        limit = min(PROBE_TIMEOUT, self._settings.health_check_interval)
        t = Timeouts(
            connect=min(self._settings.connect_timeout, limit), first_byte=None, total=limit
        )
        try:
            response = await self._upstream.request(
                provider.id, "GET", probe.url, t, headers=probe.headers, params=probe.params
            )
            await read_body(response)  # within the size cap; the connection is reused
        except ProviderError as exc:
            return scrub(f"{exc.kind}: {exc.message}", provider)
        except Exception as exc:  # a bug or an unexpected library error: still unhealthy
            log.exception("health check of %s failed unexpectedly", provider.name)
            return scrub(type(exc).__name__, provider)
        return None

    def update_gauges(self) -> None:
        """Cooldowns start and end with requests and with time: export where they stand.
        Deployments gone from the catalog leave the gauges (label sets stay bounded)."""
        now = time.monotonic()
        current = {
            (str(d["provider"]), str(d["model"]))
            for route in self._catalog.models.values()
            for d in route.deployments
        }
        for key in self._labelled - current:
            for gauge in (HEALTHY, COOLDOWN):
                with contextlib.suppress(KeyError):  # one of them may never have been set
                    gauge.remove(*key)
        self._labelled &= current
        for key, health in list(self._router.deployments.items()):
            if key in current and (health.cooled_until or key in self._labelled):
                COOLDOWN.labels(*key).set(1 if health.cooled_until > now else 0)
                self._labelled.add(key)

    async def run(self) -> None:
        interval = self._settings.health_check_interval
        next_check = time.monotonic()
        while True:
            if interval > 0 and time.monotonic() >= next_check:
                next_check = time.monotonic() + interval
                try:
                    await self.check_all()
                except Exception:
                    log.exception("health checks failed")
            self.update_gauges()
            await asyncio.sleep(min(GAUGE_EVERY, interval) if interval > 0 else GAUGE_EVERY)


def report(catalog: Catalog, router: Router, settings: Settings) -> list[dict[str, Any]]:
    """Every deployment's state, for GET /admin/v1/health/deployments."""
    now = time.monotonic()
    known = router.deployments
    served: dict[tuple[str, str], set[str]] = {}
    opted_out = set()
    for route in catalog.models.values():
        for dep in route.deployments:
            provider = catalog.providers.get(dep["provider"])
            if provider is None or not provider.enabled:
                continue
            key = (provider.name, str(dep["model"]))
            served.setdefault(key, set()).add(route.name)
            if dep.get("health_check") is False:
                opted_out.add(key)
    checking = settings.health_check_interval > 0
    out = []
    for key, models in sorted(served.items()):
        health = known.get(key) or Health()
        out.append(
            {
                "provider": key[0],
                "deployment": key[1],
                "models": sorted(models),
                "health_check": checking and key not in opted_out,
                "healthy": health.healthy,
                "checked_at": (
                    datetime.fromtimestamp(health.checked_at, UTC).isoformat()
                    if health.checked_at is not None
                    else None
                ),
                "last_error": health.check_error,
                "cooldown": health.cooled_until > now,
                "cooldown_remaining": round(max(0.0, health.cooled_until - now), 3),
                "failures": health.failures,
                "in_flight": health.in_flight,
                "latency_ms": round(health.ewma_ms, 1) if health.ewma_ms is not None else None,
            }
        )
    return out
