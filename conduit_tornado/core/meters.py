"""The gateway's Prometheus metrics: module-level prometheus_client objects, one set per
process, as Prometheus intends (several gateways in one process add up; tests assert on
deltas). They live in core so that every layer can count where the event happens; the
exposition (/metrics, multiprocess collection, gauges read from live state) is in
metering/prometheus.py.

Hot-path updates go through children resolved once per label combination and kept in a
dict: ``.labels()`` validates and locks on every call, a dict lookup does not.

Label values are bounded: routes are the gateway's own endpoint names, models virtual
model names from the catalog (or "unknown"), providers the configured provider names,
groups key group names, codes and causes the gateway's own words. Never a key, a secret or
free text from a request.

With PROMETHEUS_MULTIPROC_DIR set when the process starts (``serve --workers N`` sets it),
prometheus_client keeps every value in a file of that directory, and a scrape of any worker
sums them all; gauges say how (``livesum``: the sum over live processes).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

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
KEY_CACHE_HIT = KEY_CACHE.labels("hit")
KEY_CACHE_MISS = KEY_CACHE.labels("miss")
QUEUE_DROPPED.labels("request_logs")  # listed from the start: zero is a value worth seeing

_CHILDREN_MAX = 10_000  # label combinations are bounded; this bounds the lookup dicts too


def _child(cache: dict[Any, Any], metric: Any, labels: tuple[str, ...]) -> Any:
    child = cache.get(labels)
    if child is None:
        if len(cache) >= _CHILDREN_MAX:
            cache.clear()  # the children stay in the metric; only the shortcut is rebuilt
        child = cache[labels] = metric.labels(*labels)
    return child


_attempts: dict[tuple[str, ...], Any] = {}
_errors: dict[tuple[str, ...], Any] = {}
_retries: dict[tuple[str, ...], Any] = {}
_refusals: dict[tuple[str, ...], Any] = {}


def attempt_succeeded(provider: str) -> None:
    child = _attempts.get((provider, "success"))
    if child is None:
        child = _child(_attempts, ATTEMPTS, (provider, "success"))
    child.inc()


def attempt_failed(provider: str, cause: str) -> None:
    _child(_attempts, ATTEMPTS, (provider, "error")).inc()
    upstream_error(provider, cause)


def upstream_error(provider: str, cause: str) -> None:
    _child(_errors, ERRORS, (provider, cause)).inc()


def retried(provider: str, cause: str) -> None:
    _child(_retries, RETRIES, (provider, cause)).inc()


def refused(code: str | None) -> None:
    _child(_refusals, REFUSALS, (code or "rate_limit_exceeded",)).inc()


class _PerRequest:
    """The children one label combination of a finished request updates."""

    __slots__ = ("duration", "overhead", "requests", "ttft")

    def __init__(self, route: str, model: str, provider: str, status: int) -> None:
        self.requests = REQUESTS.labels(route, model, provider, str(status))
        self.duration = DURATION.labels(route, model, provider)
        self.overhead = OVERHEAD.labels(route)
        self.ttft = TTFT.labels(model, provider)


class _PerUsage:
    __slots__ = ("cost", "input", "output")

    def __init__(self, model: str, group: str) -> None:
        self.input = TOKENS.labels(model, group, "input")
        self.output = TOKENS.labels(model, group, "output")
        self.cost = COST.labels(model, group)


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
    observed. One dict lookup finds the children."""
    labels = (route, model, provider, status)
    children = _requests.get(labels)
    if children is None:
        if len(_requests) >= _CHILDREN_MAX:
            _requests.clear()
        children = _requests[labels] = _PerRequest(*labels)
    children.requests.inc()
    children.duration.observe(seconds)
    if overhead is not None:
        children.overhead.observe(overhead)
    if ttft is not None:
        children.ttft.observe(ttft)


def usage_recorded(model: str, group: str | None, input: int, output: int, cost: float) -> None:
    """Tokens and cost of one answered request (or realtime response)."""
    labels = (model, group or "")
    children = _usage.get(labels)
    if children is None:
        if len(_usage) >= _CHILDREN_MAX:
            _usage.clear()
        children = _usage[labels] = _PerUsage(*labels)
    if input:
        children.input.inc(input)
    if output:
        children.output.inc(output)
    if cost:
        children.cost.inc(cost)
