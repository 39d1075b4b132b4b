"""The gateway's Prometheus metrics: module-level prometheus_client objects, one set per
process, as Prometheus intends (several gateways in one process add up; tests assert on
deltas). They live in core so that every layer can count where the event happens; the
exposition (/metrics, multiprocess collection, gauges read from live state) is in
metering/prometheus.py.

The request path does not call prometheus_client: one of its updates (a method call, a
check, a lock; a histogram walks its buckets) costs thousands of instructions, and a
request makes a dozen (bench/MEASUREMENTS.md). It adds to plain numbers instead, kept per
label combination beside that combination's prometheus_client children, and ``sync()``
moves them into the children: before every scrape, and every second in multiprocess mode
(metering/prometheus.py). Rare events (failures, refusals) update the metrics directly.
Histograms are synced through prometheus_client's per-bucket values (``_buckets``,
``_sum``: private, so tests/test_metrics.py proves a synced histogram exposes exactly what
``observe()`` would have).

Label values are bounded: routes are the gateway's own endpoint names, models virtual
model names from the catalog (or "unknown"), providers the configured provider names,
groups key group names, codes and causes the gateway's own words. Never a key, a secret or
free text from a request.

With PROMETHEUS_MULTIPROC_DIR set when the process starts (``serve --workers N`` sets it),
prometheus_client keeps every value in a file of that directory, and a scrape of any worker
sums them all; gauges say how (``livesum``: the sum over live processes).
"""

from __future__ import annotations

import bisect
import os
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

# In multiprocess mode prometheus-client opens a file in PROMETHEUS_MULTIPROC_DIR for each
# metric made below, at import: a directory named but not made yet (the `--workers`
# supervisor prepares a user's only after importing this) must not fail the import.
if _multiproc_dir := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(_multiproc_dir, exist_ok=True)

#: Request latency, time to first token: from a millisecond to the longest request timeout.
LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
#: The gateway's own time per request: tenths of a millisecond matter.
OVERHEAD_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
)
#: A store operation: in-process ones take microseconds, MongoDB ones milliseconds.
STORE_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    5.0,
)

REQUESTS = Counter(
    "conduit_requests",
    "Requests answered, by route, virtual model, provider and HTTP status.",
    ["route", "model", "provider", "status"],
)
DURATION = Histogram(
    "conduit_request_duration_seconds",
    "Time from the parsed request head to the end of the answer (streams: the last event).",
    ["route", "model", "provider"],
    buckets=LATENCY_BUCKETS,
)
TTFT = Histogram(
    "conduit_time_to_first_token_seconds",
    "Streams: time from the parsed request head until the provider's first event arrived "
    "(it is sent on at once).",
    ["model", "provider"],
    buckets=LATENCY_BUCKETS,
)
OVERHEAD = Histogram(
    "conduit_gateway_overhead_seconds",
    "Gateway time per request, without upstream calls and retry waits (x-conduit-overhead-ms).",
    ["route"],
    buckets=OVERHEAD_BUCKETS,
)
ATTEMPTS = Counter(
    "conduit_upstream_attempts",
    "Tries on a deployment (a fanned-out try counts once), by provider and outcome "
    "(success or error).",
    ["provider", "outcome"],
)
ERRORS = Counter(
    "conduit_upstream_errors",
    "Failed upstream calls by provider and cause (rate_limit, server, timeout, connect, auth, "
    "bad_response, config, client, too_large, unsupported), mid-stream failures included.",
    ["provider", "cause"],
)
RETRIES = Counter(
    "conduit_upstream_retries",
    "Tries made after a failed one, by the provider that failed and its cause.",
    ["provider", "cause"],
)
TOKENS = Counter(
    "conduit_tokens",
    "Tokens used, by virtual model, key group (empty: none) and direction (input or output).",
    ["model", "key_group", "direction"],
)
COST = Counter(
    "conduit_cost_usd",
    "Cost in US dollars of priced requests, by virtual model and key group.",
    ["model", "key_group"],
)
REFUSALS = Counter(
    "conduit_rate_limit_refusals",
    "Requests refused 429 by the gateway's own limits and budgets, by error code.",
    ["code"],
)
IN_FLIGHT = Gauge(
    "conduit_in_flight_requests", "Requests being served now.", multiprocess_mode="livesum"
)
STREAMS = Gauge(
    "conduit_in_flight_streams",
    "Streamed answers being relayed now (server-sent events).",
    multiprocess_mode="livesum",
)
REALTIME_SESSIONS = Gauge(
    "conduit_realtime_sessions",
    "Realtime WebSocket sessions open now.",
    multiprocess_mode="livesum",
)
QUEUE_DEPTH = Gauge(
    "conduit_write_queue_depth",
    "Work written behind the request path and not yet written: request_logs (logs), "
    "usage_rollups (rollup documents), settlements (limit and spend documents).",
    ["queue"],
    multiprocess_mode="livesum",
)
QUEUE_DROPPED = Counter(
    "conduit_write_queue_dropped",
    "Items dropped because their write queue was full.",
    ["queue"],
)
STORE_SECONDS = Histogram(
    "conduit_store_operation_seconds",
    "Store operations by name, however they ended.",
    ["operation"],
    buckets=STORE_BUCKETS,
)
STORE_FAILURES = Counter(
    "conduit_store_failures",
    "Store operations that failed (the store unreachable or erring; a duplicate is an answer).",
    ["operation"],
)
KEY_CACHE = Counter(
    "conduit_key_cache_lookups",
    "Virtual key lookups by result: hit (answered from the cache) or miss (read from the store).",
    ["result"],
)

_CHILDREN_MAX = 10_000  # label combinations are bounded; this bounds the tables below too


class Tally:
    """A counter child's increments since the last sync: the request path adds to ``n``."""

    __slots__ = ("child", "n")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.n: float = 0
        _tallies.append(self)

    def sync(self) -> None:
        if self.n:
            n, self.n = self.n, 0
            self.child.inc(n)


class Level:
    """A gauge child's value, kept by the code that changes it: ``n`` is set on sync."""

    __slots__ = ("child", "n")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.n = 0
        _levels.append(self)

    def sync(self) -> None:
        self.child.set(self.n)


class Buckets:
    """A histogram's observations as the hot path makes them: a count per bucket and their
    sum; ``add`` is one bisect and two additions. Observed drains them into a
    prometheus_client histogram at each sync; metering/metrics.py keeps them for one
    gateway's /admin/v1/metrics."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # a bucket counts <= bound
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)


class Observed(Buckets):
    """A histogram child's observations since the last sync."""

    __slots__ = ("child",)

    def __init__(self, child: Any, bounds: tuple[float, ...]) -> None:
        super().__init__(bounds)
        self.child = child
        _observed.append(self)

    def sync(self) -> None:
        counts = self.counts
        if not any(counts):
            return
        self.counts = [0] * len(counts)
        total, self.total = self.total, 0.0
        buckets = self.child._buckets  # one value per bucket, cumulated when exposed
        for i, count in enumerate(counts):
            if count:
                buckets[i].inc(count)
        self.child._sum.inc(total)


_tallies: list[Tally] = []
_levels: list[Level] = []
_observed: list[Observed] = []


def sync() -> None:
    """Move everything counted since the last sync into the metrics (on the thread that
    counts: the event loop's)."""
    for tally in _tallies:
        tally.sync()
    for level in _levels:
        level.sync()
    for observed in _observed:
        observed.sync()


KEY_CACHE_HITS = Tally(KEY_CACHE.labels("hit"))
KEY_CACHE_MISSES = Tally(KEY_CACHE.labels("miss"))
STREAMS_OPEN = Level(STREAMS)
REALTIME_OPEN = Level(REALTIME_SESSIONS)
QUEUE_DROPPED.labels("request_logs")  # listed from the start: zero is a value worth seeing


def _full(table: dict[Any, Any]) -> bool:
    """Whether a table holds as many label combinations as it may: the rest are counted
    under "other" (a safety net; combinations are bounded by the catalog and the code)."""
    return len(table) >= _CHILDREN_MAX


_attempts_ok: dict[str, Tally] = {}


def attempt_succeeded(provider: str) -> None:
    tally = _attempts_ok.get(provider)
    if tally is None:
        if _full(_attempts_ok):
            provider = "other"
        tally = _attempts_ok.get(provider)
        if tally is None:
            tally = _attempts_ok[provider] = Tally(ATTEMPTS.labels(provider, "success"))
    tally.n += 1


# Failures and refusals are rare: straight into the metrics.


def attempt_failed(provider: str, cause: str) -> None:
    ATTEMPTS.labels(provider, "error").inc()
    upstream_error(provider, cause)


def upstream_error(provider: str, cause: str) -> None:
    ERRORS.labels(provider, cause).inc()


def retried(provider: str, cause: str) -> None:
    RETRIES.labels(provider, cause).inc()


def refused(code: str | None) -> None:
    REFUSALS.labels(code or "rate_limit_exceeded").inc()


class _PerRequest:
    """What one label combination of a finished request adds to."""

    __slots__ = ("duration", "overhead", "requests", "ttft")

    def __init__(self, route: str, model: str, provider: str, status: int) -> None:
        self.requests = Tally(REQUESTS.labels(route, model, provider, str(status)))
        self.duration = Observed(DURATION.labels(route, model, provider), LATENCY_BUCKETS)
        self.overhead = Observed(OVERHEAD.labels(route), OVERHEAD_BUCKETS)
        self.ttft = Observed(TTFT.labels(model, provider), LATENCY_BUCKETS)


class _PerUsage:
    __slots__ = ("cost", "input", "output")

    def __init__(self, model: str, group: str) -> None:
        self.input = Tally(TOKENS.labels(model, group, "input"))
        self.output = Tally(TOKENS.labels(model, group, "output"))
        self.cost = Tally(COST.labels(model, group))


_requests: dict[tuple[str, str, str, int], _PerRequest] = {}
_usage: dict[tuple[str, str], _PerUsage] = {}


def request_finished(
    route: str,
    model: str,
    provider: str,
    status: int,
    seconds: float,
    overhead: float | None = None,
    ttft: float | None = None,
) -> None:
    """One answered request: counted, its latency (and overhead, time to first token)
    observed. One dict lookup finds where."""
    labels = (route, model, provider, status)
    per = _requests.get(labels)
    if per is None:
        if _full(_requests):
            labels = (route, "other", "other", status)
        per = _requests.get(labels)
        if per is None:
            per = _requests[labels] = _PerRequest(*labels)
    per.requests.n += 1
    per.duration.add(seconds)
    if overhead is not None:
        per.overhead.add(overhead)
    if ttft is not None:
        per.ttft.add(ttft)


def usage_recorded(model: str, group: str | None, input: int, output: int, cost: float) -> None:
    """Tokens and cost of one answered request (or realtime response)."""
    labels = (model, group or "")
    per = _usage.get(labels)
    if per is None:
        if _full(_usage):
            labels = ("other", "other")
        per = _usage.get(labels)
        if per is None:
            per = _usage[labels] = _PerUsage(*labels)
    per.input.n += input
    per.output.n += output
    per.cost.n += cost


#: Store operations (store/metered.py), by operation name.
_STORE: dict[str, tuple[Observed, Any]] = {}


def store_operation(name: str) -> tuple[Observed, Any]:
    """The latency histogram (synced) and failure counter (direct) of one operation."""
    found = _STORE.get(name)
    if found is None:
        found = _STORE[name] = (
            Observed(STORE_SECONDS.labels(name), STORE_BUCKETS),
            STORE_FAILURES.labels(name),
        )
    return found
