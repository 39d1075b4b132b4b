"""Direct-vs-gateway benchmark. One command:

    .venv/bin/python bench/run.py [--duration 5] [--rounds 2] [--mongodb-uri URI] [--store local]

Starts our fast upstream (bench/upstream.py) and the gateway (`conduit-tornado serve`, a
real process with the key check, rate limits, budget, routing, usage accounting and
request logging all on), pins the gateway to core 0 and the upstream and load driver to
core 1, then runs each scenario as A (direct to upstream) and B (through the gateway)
interleaved A B A B ..., round by round over all the scenarios, reporting throughput, latency percentiles, added latency, and the
gateway's CPU time per request from its own /proc counters. Results go to stdout and to
bench/results/<date>-<store>.md. Load comes from wrk when installed, else a built-in
asyncio driver. With --mongodb-uri the report names the server's version; the jongodb
test server is refused (see DESIGN.md). With --store local a second gateway process, on
the local store (a SQLite file in a temporary directory), runs the same gateway variants
interleaved with the first one's, so its rows sit beside the memory (or MongoDB) rows.
With --workers only the workers row runs (bench/workers.py, which says how): chat at 64
connections through `serve --workers 2` against one worker held to one core, local store.
With --baseline DIR a third gateway process runs the code of another source tree (e.g.
``git archive <commit> | tar -x -C DIR``) on the same store, interleaved with this one:
on a shared, noisy machine a before/after comparison taken in one run is the one to
trust. --only keeps the scenarios whose names contain one of the given strings (the chat,
32 connections row always runs: the report's ratios are taken against it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2

ROOT = Path(__file__).resolve().parent.parent
MASTER = "condt_master_bench_" + "x" * 24
CHAT = json.dumps(
    {
        "model": "bench",
        "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
        "max_tokens": 16,
    }
)
STREAM = json.dumps(
    {
        "model": "bench",
        "stream": True,
        "max_tokens": 32,
        "messages": [{"role": "user", "content": "Stream twenty tokens."}],
    }
)
# The Responses API with the same work upstream as CHAT and STREAM (translated to chat).
RESPONSES = json.dumps(
    {"model": "bench", "input": "Say hello to the benchmark.", "max_output_tokens": 16}
)
RESPONSES_STREAM = json.dumps(
    {"model": "bench", "stream": True, "max_output_tokens": 32, "input": "Stream twenty tokens."}
)
TICK = os.sysconf("SC_CLK_TCK")
OVERHEAD_SAMPLE = 500


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pinned(cpu: int) -> Any:
    def pin() -> None:
        if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() > cpu:  # type: ignore[operator]
            os.sched_setaffinity(0, {cpu})

    return pin


@contextlib.contextmanager
def awake_cores() -> Iterator[None]:
    """Keep both cores out of idle with a spinner each at SCHED_IDLE priority, which
    runs only when nothing else wants the core. At one connection the gateway and the
    upstream take turns on two cores, and each turn wakes an idle core: in a virtual
    machine that costs tens of microseconds a time (the direct call, whose load driver
    and upstream share a core, pays none of it). Measuring with the cores awake as well
    tells the gateway's own latency from the machine's."""

    def start_spinner(cpu: int) -> subprocess.Popen[bytes]:
        def prepare() -> None:
            pinned(cpu)()
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))

        return subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=prepare)

    spinners = [start_spinner(0), start_spinner(1)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Run:
    rps: float
    p50: float  # ms
    p90: float
    p99: float
    requests: int
    errors: int
    cpu_ms_per_req: float | None = None


@dataclass
class Scenario:
    name: str
    body: str
    connections: int
    awake: bool = False  # run with both cores kept out of idle (see awake_cores)
    # Through the gateway, another route may carry the same upstream work (Responses).
    path: str = "/v1/chat/completions"
    gateway_body: str | None = None
    runs: dict[str, list[Run]] = field(default_factory=dict)


def wrk(url: str, body: str, key: str, conns: int, seconds: float) -> Run:
    env = {**os.environ, "BENCH_BODY": body, "BENCH_KEY": key}
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{conns}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(ROOT / "bench/wrk_post.lua"),
            url,
        ],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=pinned(1),
        check=True,
    ).stdout
    data = json.loads(next(line for line in out.splitlines() if line.startswith("BENCH "))[6:])
    secs = data["duration_us"] / 1e6
    return Run(
        data["requests"] / secs,
        data["p50_us"] / 1000,
        data["p90_us"] / 1000,
        data["p99_us"] / 1000,
        data["requests"],
        data["errors"] + data["non2xx"],
    )


async def _asyncio_load(url: str, body: str, key: str, conns: int, seconds: float) -> Run:
    host, port, path = _split(url)
    payload = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    ).encode()
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            writer.write(payload)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
            lower = head.lower()
            if b"transfer-encoding: chunked" in lower:
                while True:
                    size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            else:
                at = lower.find(b"content-length:")
                await reader.readexactly(int(lower[at + 15 :].split(b"\r\n", 1)[0]))
            latencies.append(time.perf_counter() - t0)
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conns)))
    elapsed = time.perf_counter() - started
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return Run(
        len(latencies) / elapsed, q[49] * 1000, q[89] * 1000, q[98] * 1000, len(latencies), errors
    )


def _split(url: str) -> tuple[str, int, str]:
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    return host, int(port), "/" + path


def load(url: str, body: str, key: str, conns: int, seconds: float) -> Run:
    if shutil.which("wrk"):
        return wrk(url, body, key, conns, seconds)
    return asyncio.run(_asyncio_load(url, body, key, conns, seconds))


async def _ttft(url: str, key: str, count: int) -> tuple[float, float]:
    """Median time to the first streamed event, and to the end, over sequential streams."""
    first, total = [], []
    async with httpx2.AsyncClient(timeout=30) as http:
        for _ in range(count):
            t0 = time.perf_counter()
            async with http.stream(
                "POST",
                url,
                content=STREAM,
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            ) as r:
                got_first = False
                async for chunk in r.aiter_raw():
                    if not got_first and b"data:" in chunk:
                        first.append(time.perf_counter() - t0)
                        got_first = True
            total.append(time.perf_counter() - t0)
    return statistics.median(first) * 1000, statistics.median(total) * 1000


def versions() -> str:
    import aiohttp
    import pymongo
    import tornado

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    wrk_version = (
        subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
        if shutil.which("wrk")
        else "built-in asyncio driver"
    )
    return (
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}; tornado {tornado.version}; "
        f"aiohttp {aiohttp.__version__}; pymongo {pymongo.__version__}; load: {wrk_version.strip()}"
    )


def mongodb_version(uri: str) -> str:
    """The server's version, for the report (and to refuse the jongodb test server)."""
    import pymongo

    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
        info = client.admin.command("buildInfo")
    return str(info.get("version", "unknown"))


class Stack:
    """Our fast upstream on core 1 and a real gateway process on core 0, with two keys:
    `limited` (every limit and a budget on, all generous) and `plain` (none)."""

    def __init__(
        self,
        event_loop: str = "auto",
        mongodb_uri: str | None = None,
        wrapper: list[str] | None = None,
        local: bool = False,
        baseline: Path | None = None,
    ) -> None:
        self.event_loop, self.mongodb_uri = event_loop, mongodb_uri
        self.local = local  # also a gateway on the local store (--store local)
        self.baseline = baseline  # also a gateway running another source tree's code
        self.wrapper = wrapper or []  # a command the gateway runs under (bench/instructions.py)
        # Under an instrumenting wrapper the gateway is ~50x slower to start and answer.
        self.timeout = 120.0 if wrapper else 5.0
        self.store = "mongodb" if mongodb_uri else "memory"

    def __enter__(self) -> Stack:
        try:
            return self._start()
        except BaseException:
            self.__exit__()  # what did start is stopped, not left running
            raise

    def _start(self) -> Stack:
        up_port, gw_port = free_port(), free_port()
        self.upstream = subprocess.Popen(
            [sys.executable, str(ROOT / "bench/upstream.py"), str(up_port)],
            preexec_fn=pinned(1),
            stdout=subprocess.DEVNULL,
        )
        tmp = Path(tempfile.mkdtemp())
        config = tmp / "bench.yaml"
        config.write_text(
            f"providers: [{{name: up, type: openai, base_url: 'http://127.0.0.1:{up_port}/v1', api_key: sk-bench}}]\n"
            "models: [{name: bench, deployments: [{provider: up, model: gpt-4o-mini}]}]\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUIT_")}
        env.update(
            {
                "CONDUIT_MASTER_KEY": MASTER,
                "CONDUIT_LOG_LEVEL": "WARNING",
                "CONDUIT_SECRET_KEY": "bench",
                "CONDUIT_EVENT_LOOP": self.event_loop,
            }
        )
        self.tmp = tmp
        self._config, self._env = config, env
        self._gw_port = gw_port
        if self.mongodb_uri:
            env.update(
                {
                    "CONDUIT_MONGODB_URI": self.mongodb_uri,
                    "CONDUIT_MONGODB_DATABASE": f"bench_{os.getpid()}",
                }
            )
        else:
            env["CONDUIT_STORE"] = "memory"
        self.gateway, self.url, self.limited, self.plain = self._gateway(env, gw_port)
        self.through = self.url + "/v1/chat/completions"
        self.direct = f"http://127.0.0.1:{up_port}/v1/chat/completions"
        if self.local:
            local_env = {k: v for k, v in env.items() if not k.startswith("CONDUIT_MONGODB")}
            local_env.update(CONDUIT_STORE="local", CONDUIT_DATA_DIR=str(tmp / "data"))
            proc, url, self.local_limited, self.local_plain = self._gateway(local_env, free_port())
            self.local_gateway: subprocess.Popen[bytes] | None = proc
            self.local_through = url + "/v1/chat/completions"
        else:
            self.local_gateway = None
        self.baseline_gateway: subprocess.Popen[bytes] | None = None
        if self.baseline is not None:
            tree = self.baseline.resolve()
            base_env = {**env, "PYTHONPATH": f"{tree / 'jupyter_ext'}{os.pathsep}{tree}"}
            proc, url, self.baseline_limited, _ = self._gateway(base_env, free_port())
            self.baseline_gateway = proc
            self.baseline_url = url
        return self

    def _gateway(self, env: dict[str, str], gw_port: int) -> tuple[Any, str, str, str]:
        """Start one gateway process; return it, its URL and its two keys."""
        config = self._config
        gateway = subprocess.Popen(
            [
                *self.wrapper,
                sys.executable,
                "-m",
                "conduit_tornado",
                "serve",
                "--port",
                str(gw_port),
                "--config",
                str(config),
            ],
            env=env,
            preexec_fn=pinned(0),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            gw = f"http://127.0.0.1:{gw_port}"
            started = time.monotonic()
            while time.monotonic() - started < 15 * self.timeout:
                try:
                    if httpx2.get(gw + "/health/ready", timeout=self.timeout).status_code == 200:
                        break
                except httpx2.TransportError:
                    time.sleep(0.05)
            self.admin = {"Authorization": f"Bearer {MASTER}"}
            limited = httpx2.post(
                gw + "/admin/v1/keys",
                timeout=self.timeout,
                headers=self.admin,
                json={
                    "name": "bench-limited",
                    "rpm": 100_000_000,
                    "tpm": 10**12,
                    "max_parallel": 100_000,
                    "max_budget": 10**9,
                },
            ).json()["key"]
            plain = httpx2.post(
                gw + "/admin/v1/keys",
                timeout=self.timeout,
                headers=self.admin,
                json={"name": "bench-plain"},
            ).json()["key"]
        except BaseException:
            gateway.kill()  # it did not come up: not left running
            gateway.wait()
            raise
        return gateway, gw, limited, plain

    def local_file_mb(self) -> float:
        """The local store's file and its WAL, in MB."""
        files = (self.tmp / "data").glob("conduit.sqlite3*")
        return sum(f.stat().st_size for f in files) / 1e6

    def __exit__(self, *_: object) -> None:
        for name in ("gateway", "local_gateway", "baseline_gateway", "upstream"):
            proc = getattr(self, name, None)
            if proc is None:
                continue
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=2, help="A/B pairs per scenario")
    parser.add_argument("--mongodb-uri", help="a real mongod for the store (default: memory)")
    parser.add_argument(
        "--store",
        choices=["local"],
        help="also run every gateway variant on the local store (SQLite), interleaved",
    )
    parser.add_argument("--event-loop", default="auto", choices=["auto", "asyncio", "uvloop"])
    parser.add_argument(
        "--soak", type=float, default=0, help="also run N seconds of sustained load, sampling RSS"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a source tree (an earlier commit) to run as a second gateway, interleaved",
    )
    parser.add_argument(
        "--only",
        action="append",
        help="run only scenarios whose name contains this (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--workers",
        action="store_true",
        help="run only the workers row: serve --workers 2 on 2 cores vs 1 worker on 1 core",
    )
    from workers import add_arguments, workers_row

    add_arguments(parser)
    args = parser.parse_args()
    if args.workers:
        return workers_row(args)

    from floor import floor

    store = "memory"
    if args.mongodb_uri:
        version = mongodb_version(args.mongodb_uri)
        if "jongodb" in version:
            print(
                "error: that is the jongodb test server, not a benchmark target: it falls "
                "behind on request-log inserts and takes the upstream's core (DESIGN.md). "
                "Give a genuine mongod.",
                file=sys.stderr,
            )
            return 2
        store = f"mongodb (server {version})"
    floors = [floor("tornado", args.duration)]  # this machine's speed now, for the ratio
    with Stack(
        args.event_loop, args.mongodb_uri, local=args.store == "local", baseline=args.baseline
    ) as stack:
        direct, through, limited, plain = stack.direct, stack.through, stack.limited, stack.plain
        pid = stack.gateway.pid
        load(through, CHAT, limited, 4, 2)  # warm up: caches, pools, JIT-free but still
        local = stack.local_gateway
        if local is not None:
            load(stack.local_through, CHAT, stack.local_limited, 4, 2)
        baseline = stack.baseline_gateway
        if baseline is not None:
            load(stack.baseline_url + "/v1/chat/completions", CHAT, stack.baseline_limited, 4, 2)
        scenarios = [
            Scenario("chat, 32 connections", CHAT, 32),
            Scenario("chat, 8 connections", CHAT, 8),
            Scenario("chat, 1 connection", CHAT, 1),
            Scenario("chat, 1 connection, cores kept awake", CHAT, 1, awake=True),
            Scenario("stream (20 chunks), 32 connections", STREAM, 32),
            Scenario("stream (20 chunks), 1 connection", STREAM, 1),
            Scenario(
                "responses, 32 connections", CHAT, 32, path="/v1/responses", gateway_body=RESPONSES
            ),
            Scenario(
                "responses stream (20 chunks), 32 connections",
                STREAM,
                32,
                path="/v1/responses",
                gateway_body=RESPONSES_STREAM,
            ),
        ]
        if args.only:
            scenarios = [
                sc
                for i, sc in enumerate(scenarios)
                if i == 0 or any(part in sc.name for part in args.only)
            ]
        plan = []
        for sc in scenarios:
            routed = stack.url + sc.path
            body = sc.gateway_body or sc.body
            variants = [
                ("direct", direct, "none", pid, sc.body),
                ("gateway", routed, limited, pid, body),
            ]
            if local is not None:
                local_routed = stack.local_through.rsplit("/v1/", 1)[0] + sc.path
                variants.append(
                    ("gateway, local store", local_routed, stack.local_limited, local.pid, body)
                )
            if baseline is not None:
                variants.append(
                    (
                        "gateway, baseline",
                        stack.baseline_url + sc.path,
                        stack.baseline_limited,
                        baseline.pid,
                        body,
                    )
                )
            if sc.connections == 32 and sc.body is CHAT and sc.gateway_body is None:
                variants.append(("gateway, no limits", through, plain, pid, body))
                if local is not None:
                    variants.append(
                        (
                            "gateway, local store, no limits",
                            stack.local_through,
                            stack.local_plain,
                            local.pid,
                            body,
                        )
                    )
            plan.append((sc, variants))
        # Round by round over every scenario, not scenario by scenario: this machine's
        # speed drifts over minutes, and the ratios the report draws between scenarios
        # (Responses against chat) are then taken from runs a few seconds apart.
        for round_ in range(args.rounds):
            for sc, variants in plan:
                order = list(variants)
                if round_ % 2:
                    # The gateways take turns going first: a slot's own bias (what ran
                    # just before it) falls on each of them alike.
                    order = [order[0], *reversed(order[1:])]
                with awake_cores() if sc.awake else contextlib.nullcontext():
                    for label, url, key, gw_pid, sent in order:
                        cpu0 = cpu_seconds(gw_pid)
                        run = load(url, sent, key, sc.connections, args.duration)
                        if label != "direct":
                            cpu = cpu_seconds(gw_pid) - cpu0
                            run.cpu_ms_per_req = cpu * 1000 / max(1, run.requests)
                        sc.runs.setdefault(label, []).append(run)
        ttft_direct = asyncio.run(_ttft(direct, "none", 100))
        ttft_gateway = asyncio.run(_ttft(through, limited, 100))
        overhead = _overhead(stack, OVERHEAD_SAMPLE)
        floors.append(floor("tornado", args.duration))
        soak = _soak(through, limited, pid, args.soak) if args.soak else None
        report = _report(scenarios, ttft_direct, ttft_gateway, overhead, floors, store, args, soak)
        if local is not None:
            report += _local_report(scenarios, stack.local_file_mb())
        if baseline is not None:
            report += _baseline_report(scenarios, args.baseline)
        print(report)
        args.out.mkdir(parents=True, exist_ok=True)
        name = stack.store + ("+local" if local is not None else "")
        name += "+baseline" if baseline is not None else ""
        target = args.out / f"{datetime.now(UTC).date().isoformat()}-{name}.md"
        target.write_text(report)
        print(f"\nsaved {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")
    return 0


@dataclass
class Overhead:
    header_ms: float  # median x-conduit-overhead-ms
    added_ms: float  # median client-seen latency, gateway minus direct
    histogram_mean_ms: float  # the /admin/v1/metrics histogram over the same requests
    histogram_median_le_ms: float


def _overhead(stack: Stack, count: int) -> Overhead:
    """Sequential chat requests, direct then through the gateway with one client: the
    gateway's own x-conduit-overhead-ms, its overhead histogram over exactly these
    requests, and the latency a client sees added."""

    def histogram() -> dict[str, float]:
        text = httpx2.get(stack.url + "/admin/v1/metrics", headers=stack.admin).text
        out = {}
        for line in text.splitlines():
            if line.startswith("conduit_overhead_seconds_bucket"):
                out[line.split('"')[1]] = float(line.rsplit(" ", 1)[1])
            elif line.startswith(
                ("conduit_overhead_seconds_sum", "conduit_overhead_seconds_count")
            ):
                out[line.split(" ")[0].rsplit("_", 1)[1]] = float(line.rsplit(" ", 1)[1])
        return out

    def timed(url: str, key: str) -> tuple[list[float], list[float]]:
        latencies, headers = [], []
        with httpx2.Client(timeout=30) as http:
            for _ in range(count):
                t0 = time.perf_counter()
                r = http.post(url, content=CHAT, headers={"Authorization": f"Bearer {key}"})
                latencies.append((time.perf_counter() - t0) * 1000)
                if "x-conduit-overhead-ms" in r.headers:
                    headers.append(float(r.headers["x-conduit-overhead-ms"]))
        return latencies, headers

    direct, _ = timed(stack.direct, "none")
    before = histogram()
    through, headers = timed(stack.through, stack.limited)
    after = histogram()
    diff = {k: after[k] - before.get(k, 0.0) for k in after}
    n = diff.get("count", 0.0) or 1.0
    median_le = next(
        (float(le) * 1000 for le, c in diff.items() if le[0].isdigit() and c >= n / 2),
        float("inf"),
    )
    return Overhead(
        statistics.median(headers),
        statistics.median(through) - statistics.median(direct),
        diff.get("sum", 0.0) / n * 1000,
        median_le,
    )


def _soak(url: str, key: str, pid: int, seconds: float) -> list[tuple[float, float]]:
    samples = [(0.0, rss_mb(pid))]
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        load(url, CHAT, key, 32, min(30.0, seconds))
        samples.append((time.monotonic() - started, rss_mb(pid)))
    return samples


def _local_report(scenarios: list[Scenario], file_mb: float) -> str:
    """The local store's rows against the first gateway's, every limit on."""
    parts = []
    for sc in scenarios:
        if "gateway, local store" not in sc.runs:
            continue
        first, local = sc.runs["gateway"], sc.runs["gateway, local store"]
        rps = _med(local, "rps") / _med(first, "rps") - 1
        cpu = _med(local, "cpu_ms_per_req") / _med(first, "cpu_ms_per_req") - 1
        parts.append(f"{sc.name}: req/s {rps:+.1%}, CPU per request {cpu:+.1%}")
    return (
        "Local store against the first gateway's store, every limit on (medians): "
        + "; ".join(parts)
        + f". The local store's file (with its WAL) after the run: {file_mb:.1f} MB.\n"
    )


def _baseline_report(scenarios: list[Scenario], tree: Path) -> str:
    """This tree's gateway against the baseline tree's, every limit on (CPU per request)."""
    parts = []
    for sc in scenarios:
        if "gateway, baseline" not in sc.runs:
            continue
        now, before = sc.runs["gateway"], sc.runs["gateway, baseline"]
        cpu_now, cpu_before = _med(now, "cpu_ms_per_req"), _med(before, "cpu_ms_per_req")
        parts.append(
            f"{sc.name}: {cpu_before:.3f} -> {cpu_now:.3f} ms ({cpu_now / cpu_before - 1:+.1%})"
        )
    by_name = {sc.name: sc.runs for sc in scenarios}
    for route, chat in (
        ("responses, 32 connections", "chat, 32 connections"),
        ("responses stream (20 chunks), 32 connections", "stream (20 chunks), 32 connections"),
    ):
        if route in by_name and chat in by_name and "gateway, baseline" in by_name[route]:
            ratios = [
                _paired(by_name[route][label], by_name[chat][label])
                for label in ("gateway, baseline", "gateway")
            ]
            parts.append(f"{route} / {chat}: {ratios[0]:.2f}x -> {ratios[1]:.2f}x")
    return (
        f"Against the baseline tree ({tree.name}), gateway CPU per request, every limit on "
        "(medians, baseline -> this tree): " + "; ".join(parts) + ".\n"
    )


def _paired(runs: list[Run], against: list[Run]) -> float:
    """The median of each round's ratio of gateway CPU per request: each pair ran seconds
    apart, where the medians of two rows may come from rounds minutes apart."""
    pairs = zip(runs, against, strict=True)
    return statistics.median(
        a.cpu_ms_per_req / b.cpu_ms_per_req
        for a, b in pairs
        if a.cpu_ms_per_req is not None and b.cpu_ms_per_req
    )


def _med(runs: list[Run], attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in runs)


def _report(
    scenarios: list[Scenario],
    ttft_d: tuple[float, float],
    ttft_g: tuple[float, float],
    overhead: Overhead,
    floors: list[tuple[float, float]],
    store: str,
    args: argparse.Namespace,
    soak: list[tuple[float, float]] | None,
) -> str:
    lines = [
        f"# conduit-tornado benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {versions()}.",
        f"Store: {store}. Event loop: {args.event_loop}. Runs: {args.rounds} x {args.duration:g} s per variant, "
        "interleaved; medians shown. Gateway pinned to core 0; upstream and load driver to core 1.",
        "",
        "| scenario | variant | req/s | p50 ms | p90 ms | p99 ms | added p50 ms | gateway CPU ms/req | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for sc in scenarios:
        base = _med(sc.runs["direct"], "p50")
        for label, runs in sc.runs.items():
            added = "" if label == "direct" else f"{_med(runs, 'p50') - base:.2f}"
            cpu = "" if label == "direct" else f"{_med(runs, 'cpu_ms_per_req'):.3f}"
            lines.append(
                f"| {sc.name} | {label} | {_med(runs, 'rps'):,.0f} | {_med(runs, 'p50'):.2f} | "
                f"{_med(runs, 'p90'):.2f} | {_med(runs, 'p99'):.2f} | {added} | {cpu} | "
                f"{sum(r.errors for r in runs)} |"
            )
    chat32 = scenarios[0].runs
    limiter = _med(chat32["gateway"], "cpu_ms_per_req") - _med(
        chat32["gateway, no limits"], "cpu_ms_per_req"
    )
    lines += [
        "",
        f"Limiter (rpm, tpm, max_parallel, budget) cost: {limiter:+.3f} ms of gateway CPU per request "
        "(gateway vs gateway-no-limits, chat at 32 connections).",
        f"Time to first streamed event (median of 100 sequential streams): direct {ttft_d[0]:.2f} ms, "
        f"gateway {ttft_g[0]:.2f} ms (added {ttft_g[0] - ttft_d[0]:.2f} ms); whole stream direct "
        f"{ttft_d[1]:.2f} ms, gateway {ttft_g[1]:.2f} ms.",
        f"Overhead, {OVERHEAD_SAMPLE} sequential chat requests with one client: the gateway's "
        f"x-conduit-overhead-ms median {overhead.header_ms:.3f} ms; its overhead histogram over the "
        f"same requests mean {overhead.histogram_mean_ms:.3f} ms, median bucket <= "
        f"{overhead.histogram_median_le_ms:g} ms; latency the client saw added (median, gateway minus "
        f"direct) {overhead.added_ms:.3f} ms. The header counts from the parsed request head to the "
        "answer, without upstream time; the histogram is taken later, after the answer is "
        "written; the client also sees the upstream call's own CPU, the socket writes and one "
        "more loopback hop.",
    ]
    floor_ms = statistics.mean(cpu for _, cpu in floors)
    lines.append(
        "Machine speed check: a trivial handler on Tornado's own HTTP server cost "
        + " and ".join(f"{cpu:.3f} ms ({rps:,.0f} req/s)" for rps, cpu in floors)
        + " of CPU per request at the start and end of this run (bench/floor.py; this "
        "machine's speed drifts by up to ~40% between runs). The gateway, every limit on, "
        f"cost {_med(chat32['gateway'], 'cpu_ms_per_req') / floor_ms:.2f}x that per chat request."
    )
    by_name = {sc.name: sc for sc in scenarios}
    for route, chat in (
        ("responses, 32 connections", "chat, 32 connections"),
        ("responses stream (20 chunks), 32 connections", "stream (20 chunks), 32 connections"),
    ):
        if route in by_name and chat in by_name:
            ratio = _paired(by_name[route].runs["gateway"], by_name[chat].runs["gateway"])
            lines.append(
                f"{route.capitalize()}: gateway CPU per request {ratio:.2f}x the {chat} row "
                "(the same upstream work, translated to and from chat; the median of each "
                "round's ratio)."
            )
    awake = next((sc for sc in scenarios if sc.awake), None)
    if awake is not None:
        lines.append(
            "Cores kept awake (a SCHED_IDLE spinner on each core, for both variants): at one "
            "connection every request wakes an idle core several times (client to gateway, "
            "gateway to upstream and back), which in this virtual machine costs tens of "
            "microseconds a time, while the direct call's client and upstream share a core. "
            "The awake row shows the latency the gateway itself adds; the plain 1-connection "
            "row includes the machine's wake-ups."
        )
    if soak:
        lines.append(
            "RSS during the soak (s, MB): " + ", ".join(f"{t:.0f}: {m:.1f}" for t, m in soak)
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
