"""Prometheus exposition: what a scrape of /metrics sees (the metrics are core/meters.py).

What the request path counts in plain numbers (core/meters.py), and gauges of state the
gateway keeps anyway (requests in flight, write queues), are brought into the metrics by
``refresh()``: before each scrape in the scraping process, and, in multiprocess mode,
every ``REFRESH_SECONDS`` in every worker (a scrape reads the other workers' files), and
once more when a gateway stops. A worker killed outright loses at most that second.

Multiprocess mode (PROMETHEUS_MULTIPROC_DIR set before the process started): a scrape
collects every worker's files with MultiProcessCollector into a fresh registry; otherwise
the process's default registry is exposed (process and Python metrics included).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from conduit_tornado.admission.limits import Limiter
from conduit_tornado.core import meters
from conduit_tornado.core.in_flight import InFlight

from .recorder import Recorder

REFRESH_SECONDS = 1.0
CONTENT_TYPE = CONTENT_TYPE_LATEST


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


@dataclass(eq=False)
class Watched:
    """One gateway's state behind the gauges."""

    in_flight: InFlight
    recorder: Recorder
    limiter: Limiter


_watched: list[Watched] = []


def watch(in_flight: InFlight, recorder: Recorder, limiter: Limiter) -> Watched:
    """Report a gateway's state in the gauges (until unwatch)."""
    watched = Watched(in_flight, recorder, limiter)
    _watched.append(watched)
    return watched


def unwatch(watched: Watched) -> None:
    if watched in _watched:
        _watched.remove(watched)
    refresh()


def refresh() -> None:
    """Bring the metrics up to date: what the request path counted since the last time
    (core/meters.py), and the gauges from the state of every gateway of this process."""
    meters.sync()
    meters.IN_FLIGHT.set(sum(w.in_flight.requests for w in _watched))
    depth = meters.QUEUE_DEPTH
    depth.labels("request_logs").set(sum(w.recorder.pending for w in _watched))
    depth.labels("usage_rollups").set(sum(w.recorder.pending_rollups for w in _watched))
    depth.labels("settlements").set(sum(w.limiter.pending_writes for w in _watched))


async def refresh_forever() -> None:
    """In multiprocess mode a scrape reads the other workers' files: keep them current."""
    if multiprocess_dir() is None:
        return
    while True:
        refresh()
        await asyncio.sleep(REFRESH_SECONDS)


def exposition() -> bytes:
    """The text a scrape gets (blocking: reads files in multiprocess mode; run it off the
    event loop)."""
    if multiprocess_dir() is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


async def scrape() -> bytes:
    refresh()  # on the loop: it reads the gateways' state
    return await asyncio.to_thread(exposition)
