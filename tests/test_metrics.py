"""GET /metrics: Prometheus exposition that parses with prometheus_client's own parser,
moves with traffic (chat, stream, upstream errors and retries, 429 refusals, tokens and
cost, key cache, store operations and failures, write queues), its bearer token, its own
port, multiprocess aggregation across two gateway processes, and the Grafana dashboard
built on exactly these names.

The metrics are process-wide (several gateways run in this test process), so every
assertion is on a difference between two scrapes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx2
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from conduit_tornado.core import meters
from conduit_tornado.store import MemoryStore
from tests.conftest import MASTER_KEY, GatewayFactory
from tests.fakes.providers import PROMPT_TOKENS
from tests.gateway_process import MODEL, GatewayProcess
from tests.proxy_setup import Wired, WiredFactory
from tests.realtime_setup import RT, recv
from tests.store_faults import Down

pytestmark = pytest.mark.asyncio
ROOT = Path(__file__).resolve().parent.parent
HI = [{"role": "user", "content": "Say hello"}]
CHAT = ("chat.completions", "gpt", "oai")
#: The feed helper's names (deployment health checks, change feed): on the dashboard,
#: present in a scrape only once health checks or a change feed have run.
FEED_NAMES = {
    "conduit_deployment_healthy",
    "conduit_deployment_cooldown",
    "conduit_config_changes_applied",
}

# Made once, at import: a client building its own context reads the CA bundle on the
# event loop, which the loop watchdog rightly flags on a loaded machine.
TLS = ssl.create_default_context()


def client(base_url: str = "", timeout: float = 30) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(base_url=base_url, timeout=timeout, verify=TLS)


@contextlib.asynccontextmanager
async def streamed(w: Wired, body: dict[str, object]) -> AsyncIterator[httpx2.Response]:
    """POST /v1/chat/completions with this key, its response read as it arrives."""
    async with (
        client(w.gateway.url) as http,
        http.stream(
            "POST", "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {w.key}"}
        ) as response,
    ):
        yield response


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Scrape:
    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: Samples = {
            (s.name, frozenset(s.labels.items())): s.value
            for f in self.families.values()
            for s in f.samples
        }

    def total(self, name: str, **labels: str) -> float:
        """The sum over every sample of ``name`` with these labels (and any others)."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)

    def get(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(url: str, token: str | None = None) -> Scrape:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with client(timeout=10) as http:
        r = await http.get(url + "/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=")
    # Parsed off the loop: prometheus_client's parser is pure Python, and the gateways of
    # the whole test session share these metrics, so a late scrape is long.
    return await asyncio.to_thread(Scrape, r.text)


def moved(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after.get(name, **labels) - before.get(name, **labels)


async def chat(w: Wired, key: str | None = None, **body: object) -> httpx2.Response:
    async with client(w.gateway.url, timeout=30) as http:
        return await http.post(
            "/v1/chat/completions",
            json={"model": "gpt", "messages": HI, **body},
            headers={"Authorization": f"Bearer {key or w.key}"},
        )


def request_labels(status: str, route: str = CHAT[0], model: str = CHAT[1]) -> dict[str, str]:
    provider = CHAT[2] if status == "200" else ""
    return {"route": route, "model": model, "provider": provider, "status": status}


async def test_requests_latency_tokens_and_cost_move_with_traffic(
    wired_with: WiredFactory,
) -> None:
    # Logs stay queued (no flush during the test): the queue's depth is visible.
    w = await wired_with(retry_backoff=0.01, log_flush_interval=60)
    group_key = (await w.admin.create_key(name="grouped", group="research"))["key"]
    before = await scrape(w.gateway.url)

    assert (await chat(w)).status_code == 200
    assert (await chat(w, group_key)).status_code == 200
    async with streamed(w, {"model": "gpt", "messages": HI, "stream": True}) as r:
        assert r.status_code == 200
        async for _ in r.aiter_bytes():
            pass
    assert (await chat(w, model="no-such-model")).status_code == 404
    after = await scrape(w.gateway.url)

    assert moved(before, after, "conduit_requests_total", **request_labels("200")) == 3
    # An unknown model is counted as "unknown": label values never come from the request.
    assert moved(before, after, "conduit_requests_total", **request_labels("404", model="unknown"))
    assert (
        moved(
            before,
            after,
            "conduit_request_duration_seconds_count",
            **dict(zip(("route", "model", "provider"), CHAT, strict=True)),
        )
        == 3
    )
    assert moved(before, after, "conduit_gateway_overhead_seconds_count", route=CHAT[0]) == 3
    ttft = {"model": "gpt", "provider": "oai"}
    assert moved(before, after, "conduit_time_to_first_token_seconds_count", **ttft) == 1
    assert moved(before, after, "conduit_time_to_first_token_seconds_sum", **ttft) > 0
    assert (
        moved(before, after, "conduit_upstream_attempts_total", provider="oai", outcome="success")
        == 3
    )

    tokens = "conduit_tokens_total"
    assert moved(before, after, tokens, model="gpt", key_group="", direction="input") == (
        2 * PROMPT_TOKENS
    )
    assert moved(before, after, tokens, model="gpt", key_group="research", direction="input") == (
        PROMPT_TOKENS
    )
    assert moved(before, after, tokens, model="gpt", key_group="", direction="output") > 0
    ctx = w.gateway.ctx
    assert ctx is not None
    logs = list(ctx.recorder._logs)
    cost = sum(e["cost"] for e in logs if e.get("group") == "research")
    assert cost > 0
    assert moved(
        before, after, "conduit_cost_usd_total", model="gpt", key_group="research"
    ) == pytest.approx(cost)

    # The first request of a key reads the store; later ones hit the cache.
    assert moved(before, after, "conduit_key_cache_lookups_total", result="miss") >= 2
    assert moved(before, after, "conduit_key_cache_lookups_total", result="hit") >= 2
    # Four request logs wait in the queue (log_flush_interval=60).
    assert after.get("conduit_write_queue_depth", queue="request_logs") >= 4
    assert "conduit_write_queue_dropped" in after.families
    # Store operations are timed: the key lookups above at least.
    assert moved(before, after, "conduit_store_operation_seconds_count", operation="find_one") >= 2
    # The scrape itself is a request in flight when it is taken.
    assert after.get("conduit_in_flight_requests") >= 1


async def test_upstream_errors_retries_and_refusals(wired_with: WiredFactory) -> None:
    w = await wired_with(retry_backoff=0.01)
    limited = (await w.admin.create_key(name="one a minute", rpm=1))["key"]
    before = await scrape(w.gateway.url)

    w.fake.then(status=500)  # the first try fails; the retry answers
    assert (await chat(w)).status_code == 200
    w.fake.then(status=400, body={"error": {"message": "bad", "type": "invalid_request_error"}})
    assert (await chat(w)).status_code == 400  # the request's fault: not retried
    assert (await chat(w, limited)).status_code == 200
    refused = await chat(w, limited)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    after = await scrape(w.gateway.url)

    assert (
        moved(before, after, "conduit_upstream_errors_total", provider="oai", cause="server") == 1
    )
    assert (
        moved(before, after, "conduit_upstream_errors_total", provider="oai", cause="client") == 1
    )
    assert (
        moved(before, after, "conduit_upstream_retries_total", provider="oai", cause="server") == 1
    )
    attempts = "conduit_upstream_attempts_total"
    assert moved(before, after, attempts, provider="oai", outcome="error") == 2
    assert moved(before, after, attempts, provider="oai", outcome="success") == 2
    refusals = "conduit_rate_limit_refusals_total"
    assert moved(before, after, refusals, code="rate_limit_exceeded") == 1
    assert moved(before, after, "conduit_requests_total", **request_labels("429")) == 1
    # A provider's refusal is counted against the provider that was tried.
    tried = {**request_labels("400"), "provider": "oai"}
    assert moved(before, after, "conduit_requests_total", **tried) == 1


async def test_a_stream_in_flight_and_a_failure_mid_stream(wired: Wired) -> None:
    before = await scrape(wired.gateway.url)
    wired.fake.then(chunk_delay=0.3)
    async with streamed(wired, {"model": "gpt", "messages": HI, "stream": True}) as r:
        chunks = r.aiter_bytes()
        assert await anext(chunks)
        during = await scrape(wired.gateway.url)
        async for _ in chunks:
            pass
    assert moved(before, during, "conduit_in_flight_streams") == 1
    assert during.get("conduit_in_flight_requests") >= 2  # the stream and the scrape
    wired.fake.then(drop_after=2)  # the provider cuts the stream after two events
    async with streamed(wired, {"model": "gpt", "messages": HI, "stream": True}) as r:
        async for _ in r.aiter_bytes():
            pass
    after = await scrape(wired.gateway.url)
    assert after.get("conduit_in_flight_streams") == before.get("conduit_in_flight_streams")
    errors = after.total("conduit_upstream_errors_total", provider="oai") - before.total(
        "conduit_upstream_errors_total", provider="oai"
    )
    assert errors == 1  # after the first byte: nothing can be retried, but it is counted


async def test_realtime_sessions_and_their_tokens(rt: RT) -> None:
    before = await scrape(rt.gw.url)
    async with rt.connect() as ws:
        await recv(ws, "session.created")
        await ws.send(json.dumps({"type": "response.create"}))
        done = (await recv(ws, "response.done"))[-1]
        during = await scrape(rt.gw.url)
    usage = done["response"]["usage"]
    assert moved(before, during, "conduit_realtime_sessions") == 1
    tokens = "conduit_tokens_total"
    for direction, field in (("input", "input_tokens"), ("output", "output_tokens")):
        labels = {"model": "rt", "key_group": "", "direction": direction}
        assert moved(before, during, tokens, **labels) == usage[field]
    for _ in range(100):  # the session's end is handled after the socket closed
        after = await scrape(rt.gw.url)
        if moved(before, after, "conduit_realtime_sessions") == 0:
            break
        await asyncio.sleep(0.05)
    assert moved(before, after, "conduit_realtime_sessions") == 0


async def test_store_failures_are_counted(start_gateway: GatewayFactory) -> None:
    store = Down(MemoryStore())
    gw = await start_gateway(store=store)  # type: ignore[arg-type]
    before = await scrape(gw.url)
    store.down = True
    async with client(gw.url, timeout=10) as http:
        r = await http.get("/v1/models", headers={"Authorization": "Bearer condt_" + "x" * 40})
    store.down = False
    assert r.status_code == 503
    after = await scrape(gw.url)
    failed = moved(before, after, "conduit_store_failures_total", operation="find_one")
    assert failed == 1
    assert moved(before, after, "conduit_store_operation_seconds_count", operation="find_one") >= 1


async def test_admin_metrics_keep_working(wired: Wired) -> None:
    assert (await chat(wired)).status_code == 200
    async with client(wired.gateway.url) as http:
        r = await http.get("/admin/v1/metrics", headers={"Authorization": f"Bearer {MASTER_KEY}"})
    assert r.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert families["conduit_overhead_seconds"].type == "histogram"
    assert 'conduit_overhead_seconds_bucket{le="+Inf"} 1' in r.text


async def test_a_synced_histogram_exposes_what_observe_would() -> None:
    """meters.Observed writes prometheus_client's per-bucket values (private API): the
    exposition must be exactly that of observe() on the same values."""
    registry = CollectorRegistry()
    buckets = meters.LATENCY_BUCKETS
    synced = Histogram("synced_seconds", "h", ["route"], buckets=buckets, registry=registry)
    direct = Histogram("direct_seconds", "h", ["route"], buckets=buckets, registry=registry)
    observed = meters.Observed(synced.labels("r"), buckets)
    values = [0.0, 0.005, 0.0051, 0.3, 1.0, 299.0, 300.0, 301.0, 1e9, 0.005, 7.5]
    for batch in (values, values[:3]):  # twice: a sync adds to what is there
        for v in batch:
            observed.add(v)
            direct.labels("r").observe(v)
        observed.sync()
    exposed: dict[str, dict[tuple[str, ...], float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            suffix = sample.name.removeprefix(family.name)
            key = (suffix, *(f"{k}={v}" for k, v in sorted(sample.labels.items())))
            exposed.setdefault(family.name, {})[key] = sample.value
    assert exposed["synced_seconds"] == exposed["direct_seconds"]
    assert len(exposed["direct_seconds"]) == len(buckets) + 3  # buckets, +Inf, sum, count
    assert exposed["direct_seconds"][("_count", "route=r")] == len(values) + 3


# -- token and port ---------------------------------------------------------------------------


async def test_the_token_is_required_when_set(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway(metrics_token="scrape-me-please")
    async with client(gw.url, timeout=10) as http:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "Bearer scrape-me-pleasE"},
            {"Authorization": "Basic scrape-me-please"},
            {"Authorization": f"Bearer {MASTER_KEY}"},
        ):
            r = await http.get("/metrics", headers=headers)
            assert r.status_code == 401, headers
            assert r.json()["error"]["code"] == "invalid_api_key"
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert "scrape-me" not in r.text
    assert "conduit_requests" in (await scrape(gw.url, "scrape-me-please")).families


async def test_a_metrics_port_serves_metrics_alone(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway(metrics_port=0, metrics_token="t0ken")
    assert gw.metrics_port is not None and gw.metrics_port != gw.port
    metrics_url = f"http://127.0.0.1:{gw.metrics_port}"
    async with client(timeout=10) as http:
        main = await http.get(gw.url + "/metrics", headers={"Authorization": "Bearer t0ken"})
        assert main.status_code == 404
        other = await http.get(metrics_url + "/v1/models", headers={"Authorization": "Bearer x"})
        assert other.status_code == 404
        assert (await http.get(metrics_url + "/health/live")).status_code == 404
        assert (await http.get(metrics_url + "/metrics")).status_code == 401
        # The main port goes on serving everything else.
        assert (await http.get(gw.url + "/health/live")).status_code == 200
    assert "conduit_requests" in (await scrape(metrics_url, "t0ken")).families
    await gw.stop()
    with pytest.raises(httpx2.TransportError):
        async with client(timeout=2) as http:
            await http.get(metrics_url + "/metrics")


# -- several processes ----------------------------------------------------------------------


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    shared = tmp_path / "prometheus"
    shared.mkdir()
    first = GatewayProcess(PROMETHEUS_MULTIPROC_DIR=str(shared))
    try:
        second = GatewayProcess(PROMETHEUS_MULTIPROC_DIR=str(shared))
        try:
            yield first, second
        finally:
            second.stop()
    finally:
        first.stop()


async def test_multiprocess_mode_sums_every_process(
    two_workers: tuple[GatewayProcess, GatewayProcess],
) -> None:
    first, second = two_workers
    async with client(timeout=30) as http:
        for gw, count in ((first, 3), (second, 2)):
            for _ in range(count):
                r = await http.post(
                    gw.url + "/v1/chat/completions",
                    json={"model": MODEL, "messages": HI},
                    headers={"Authorization": f"Bearer {gw.key}"},
                )
                assert r.status_code == 200
    labels = {"route": "chat.completions", "model": MODEL, "provider": "mock", "status": "200"}
    for gw in (first, second):  # either process answers with the sum of both
        # The scraped process counts up to the scrape; the other writes its counts to the
        # shared files every second (metering/prometheus.py).
        for _ in range(50):
            seen = await scrape(gw.url)
            if seen.get("conduit_requests_total", **labels) >= 5:
                break
            await asyncio.sleep(0.1)
        assert seen.get("conduit_requests_total", **labels) == 5
        assert seen.get("conduit_upstream_attempts_total", provider="mock", outcome="success") == 5
        assert seen.get("conduit_key_cache_lookups_total", result="miss") == 2
        assert seen.get("conduit_key_cache_lookups_total", result="hit") == 3
    # Gauges: each process reports its own state every second and a scrape sums the live
    # ones: once both have reported since their traffic, only the scrape is in flight.
    for _ in range(50):
        seen = await scrape(first.url)
        if seen.get("conduit_in_flight_requests") == 1:
            break
        await asyncio.sleep(0.1)
    assert seen.get("conduit_in_flight_requests") == 1


# -- the dashboard --------------------------------------------------------------------------


def dashboard_metric_names() -> set[str]:
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    assert exprs, "the dashboard queries nothing"
    names = {n for e in exprs for n in re.findall(r"\bconduit_[a-z_]+", e)}
    return {re.sub(r"_(bucket|sum|count|total)$", "", n) for n in names}


async def test_every_dashboard_metric_is_in_a_live_scrape(wired_with: WiredFactory) -> None:
    w = await wired_with(retry_backoff=0.01)
    limited = (await w.admin.create_key(name="one a minute", rpm=1, group="g"))["key"]
    w.fake.then(status=500)
    assert (await chat(w)).status_code == 200
    async with streamed(w, {"model": "gpt", "messages": HI, "stream": True}) as r:
        async for _ in r.aiter_bytes():
            pass
    await chat(w, limited)
    assert (await chat(w, limited)).status_code == 429
    families = set((await scrape(w.gateway.url)).families)
    names = dashboard_metric_names()
    missing = names - families - FEED_NAMES
    assert not missing, f"the dashboard queries metrics no scrape has: {sorted(missing)}"
    assert names >= FEED_NAMES  # deployment health and cooldown are on the dashboard too
