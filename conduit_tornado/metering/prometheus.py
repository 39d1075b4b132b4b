"""Prometheus exposition: what a scrape of /metrics sees (the metrics are core/meters.py).

Counters and histograms are updated where things happen. Gauges of state the gateway
already keeps (requests in flight, write queues) are read from it instead, never kept
twice on the request path: at each scrape in the scraping process, and, in multiprocess
mode, every ``REFRESH_SECONDS`` in every worker (a scrape reads the other workers' files).

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
    """Set the gauges from the state of every gateway of this process."""
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
