"""The workers row (issue 23): chat at 64 connections, every limit on, local store, through
`serve --workers 2` on the machine's two cores against one worker held to one core.

    .venv/bin/python bench/workers.py [--duration 6] [--rounds 3] [--python-tools]
    .venv/bin/python bench/run.py --workers [--duration 6] [--rounds 3]     (the same)

The upstream and the load driver run on the same machine, so they take CPU the gateway
could have had. To make the row measure the gateway, they are native when installed:
nginx answering the canned chat completion with ``return 200`` (keep-alive on, access log
off, one worker process) and wrk (one thread). Neither is a dependency; without them the
Python ones run instead (bench/upstream.py, the asyncio driver of bench/run.py) and the
report says so. With both available, --python-tools adds the Python pair as a second
set of variants in the same interleaved run, so the change of setup is visible.

Variants, interleaved A B C A B C ...:

* ``1 worker, core 0, tools core 1``: one gateway process (``--workers 1``) pinned to
  core 0, the upstream and the driver pinned to core 1: one worker on one core.
* ``1 worker, core 0, tools free``: the same gateway with the upstream and the driver free
  on both cores (the baseline before 2026-12-06 18:00).
* ``1 worker, core 0, tools core 0 too``: the tools on the gateway's core: what sharing a
  core with them costs the gateway.
* ``2 workers, all free``: ``serve --workers 2`` with everything free on both cores.
* ``2 workers held one per core, tools free``: the same with CONDUIT_WORKER_AFFINITY on.

CPU per request is read from /proc for each group of processes (supervisor, workers,
upstream, driver), and the machine's own counters (/proc/stat) give the CPU everything
else on the machine took meanwhile and the time the hypervisor stole. With G1 the
gateway's CPU per request with one worker and U the upstream's and driver's, two workers
sharing the two cores with the tools can serve at most 2 / (G2 + U) requests a second
against one worker's 1 / G1: the ceiling 2 x G1 / (G2 + U), or 2 x G1 / (G1 + U) if a
second worker cost nothing more per request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parent))

import upstream as python_upstream  # bench/ is not a package: its modules by path
from run import (
    CHAT,
    MASTER,
    ROOT,
    TICK,
    Run,
    _asyncio_load,
    cpu_seconds,
    free_port,
    versions,
)

CONNECTIONS = 64
ONE = "1 worker, core 0"
TWO = "2 workers"
TOOLS_PINNED = "tools core 1"
TOOLS_FREE = "tools free"
TOOLS_SHARED = "tools core 0 too"
ALL_FREE = "all free"
HELD = "2 workers held one per core"


def family(pid: int) -> list[int]:
    """A process and its children (a supervisor's workers, nginx's worker)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(stat.parent.name))
    return [pid, *kids]


def machine_cpu() -> tuple[float, float]:
    """Seconds of CPU the whole machine spent busy, and stolen by the hypervisor."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq) / TICK, steal / TICK


def pin(cpus: set[int] | None) -> Callable[[], None] | None:
    if cpus is None or not hasattr(os, "sched_setaffinity"):
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def set_affinity(pid: int, cpus: set[int]) -> None:
    """Every thread of a running process on these cores."""
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(task.name), cpus)


@dataclass
class Tools:
    """An upstream and a load driver: native (nginx, wrk) or Python."""

    name: str  # "native" or "python"
    model: str  # the gateway's model routed to this upstream
    process: subprocess.Popen[bytes]
    port: int
    description: str

    @property
    def native(self) -> bool:
        return self.name == "native"

    def upstream_pids(self) -> list[int]:
        return family(self.process.pid)

    def drive(self, url: str, key: str, seconds: float, cpus: set[int] | None) -> tuple[Run, float]:
        """A run of load, and the driver's CPU seconds."""
        body = CHAT.replace('"bench"', f'"{self.model}"')
        if self.native:
            return wrk(url, body, key, seconds, cpus)
        previous = os.sched_getaffinity(0)
        if cpus is not None:
            os.sched_setaffinity(0, cpus)  # this thread only: the asyncio driver runs here
        try:
            cpu0 = time.process_time()
            run = asyncio.run(_asyncio_load(url, body, key, CONNECTIONS, seconds))
            return run, time.process_time() - cpu0
        finally:
            os.sched_setaffinity(0, previous)


def wrk(url: str, body: str, key: str, seconds: float, cpus: set[int] | None) -> tuple[Run, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [
            *["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s"],
            *["-s", str(ROOT / "bench/wrk_post.lua"), url],
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "BENCH_BODY": body, "BENCH_KEY": key},
        preexec_fn=pin(cpus),
        check=True,
    ).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    data = json.loads(next(line for line in out.splitlines() if line.startswith("BENCH "))[6:])
    secs = data["duration_us"] / 1e6
    run = Run(
        data["requests"] / secs,
        data["p50_us"] / 1000,
        data["p90_us"] / 1000,
        data["p99_us"] / 1000,
        data["requests"],
        data["errors"] + data["non2xx"],
    )
    return run, cpu


def _nginx_conf(tmp: Path, port: int) -> Path:
    answer = python_upstream.ANSWER.decode()
    if "'" in answer or "\\" in answer or "$" in answer:
        raise ValueError("the canned answer needs escaping for nginx")
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"""daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/nginx-body;
  proxy_temp_path {tmp}/nginx-proxy;
  fastcgi_temp_path {tmp}/nginx-fastcgi;
  uwsgi_temp_path {tmp}/nginx-uwsgi;
  scgi_temp_path {tmp}/nginx-scgi;
  keepalive_requests 1000000000;
  keepalive_timeout 600s;
  client_body_buffer_size 64k;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = /v1/chat/completions {{
      default_type application/json;
      return 200 '{answer}';
    }}
  }}
}}
"""
    )
    return conf


def wait_until_listening(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


def start_tools(kind: str, tmp: Path, model: str) -> Tools:
    port = free_port()
    if kind == "native":
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        conf = _nginx_conf(tmp, port)
        proc = subprocess.Popen(
            [nginx, "-c", str(conf), "-p", str(tmp)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        version = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip()
        wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
        description = (
            f"upstream {version.split(': ', 1)[-1]} (one process, `return 200` with the canned "
            f"chat completion, keep-alive), driver {wrk_version.stdout.split(' Copyright')[0]} "
            "(one thread)"
        )
    else:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench/upstream.py"), str(port)],
            stdout=subprocess.DEVNULL,
        )
        description = "upstream bench/upstream.py (Python asyncio), driver run.py's asyncio driver"
    wait_until_listening(port, proc, f"the {kind} upstream")
    return Tools(kind, model, proc, port, description)


def native_available() -> str | None:
    """Why the native tools cannot run, or None when they can."""
    missing = [tool for tool in ("nginx", "wrk") if not shutil.which(tool)]
    if "nginx" in missing and Path("/usr/sbin/nginx").exists():
        missing.remove("nginx")  # Debian's, off a non-root PATH
    if missing:
        return (
            f"{' and '.join(missing)} not installed (e.g. `apt-get install nginx-light wrk`): "
            "the Python upstream and driver run instead, and take more of the cores"
        )
    return None


@dataclass
class Gateway:
    label: str
    process: subprocess.Popen[bytes]
    url: str
    key: str

    def pids(self) -> tuple[list[int], list[int]]:
        """(the supervisor, if any; the serving processes)."""
        members = family(self.process.pid)
        if len(members) == 1:
            return [], members
        return [members[0]], members[1:]


def start_gateway(
    label: str, workers: int, config: Path, env: dict[str, str], data: Path, cpus: set[int] | None
) -> Gateway:
    port = free_port()
    proc = subprocess.Popen(
        [
            *[sys.executable, "-m", "conduit_tornado", "serve"],
            *["--port", str(port), "--config", str(config), "--workers", str(workers)],
        ],
        env={**env, "CONDUIT_DATA_DIR": str(data)},
        preexec_fn=pin(cpus),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx2.get(url + "/health/ready", timeout=5).status_code == 200:
                break
        except httpx2.TransportError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise
            time.sleep(0.05)
    key = httpx2.post(
        url + "/admin/v1/keys",
        headers={"Authorization": f"Bearer {MASTER}"},
        timeout=30,
        json={
            "name": "bench-limited",
            "rpm": 100_000_000,
            "tpm": 10**12,
            "max_parallel": 100_000,
            "max_budget": 10**9,
        },
    ).json()["key"]
    return Gateway(label, proc, url + "/v1/chat/completions", key)


@dataclass
class Sample:
    run: Run
    wall: float
    supervisor: float  # CPU seconds of each group over the run
    workers: float
    upstream: float
    driver: float
    machine: float  # the whole machine's busy CPU seconds
    steal: float

    def per_request(self, seconds: float) -> float:
        return seconds * 1000 / max(1, self.run.requests)

    @property
    def gateway(self) -> float:
        return self.supervisor + self.workers

    @property
    def ours(self) -> float:
        return self.gateway + self.upstream + self.driver


@dataclass
class Variant:
    name: str
    gateway: Gateway
    tools: Tools
    tool_cpus: set[int] | None
    samples: list[Sample] = field(default_factory=list)

    def measure(self, seconds: float) -> Sample:
        supervisor, serving = self.gateway.pids()
        every_core = os.sched_getaffinity(0)
        for pid in self.tools.upstream_pids():  # the driver is placed as it starts
            set_affinity(pid, self.tool_cpus or every_core)
        return self._measure(supervisor, serving, seconds)

    def _measure(self, supervisor: list[int], serving: list[int], seconds: float) -> Sample:
        up_pids = self.tools.upstream_pids()

        def cpu(pids: list[int]) -> float:
            total = 0.0
            for pid in pids:
                with contextlib.suppress(OSError):
                    total += cpu_seconds(pid)
            return total

        before = [cpu(supervisor), cpu(serving), cpu(up_pids)]
        machine0, steal0 = machine_cpu()
        wall = time.monotonic()
        run, driver = self.tools.drive(self.gateway.url, self.gateway.key, seconds, self.tool_cpus)
        wall = time.monotonic() - wall
        machine1, steal1 = machine_cpu()
        after = [cpu(supervisor), cpu(serving), cpu(up_pids)]
        sup, work, up = (a - b for a, b in zip(after, before, strict=True))
        sample = Sample(run, wall, sup, work, up, driver, machine1 - machine0, steal1 - steal0)
        self.samples.append(sample)
        return sample

    def med(self, value: Callable[[Sample], float]) -> float:
        return statistics.median(value(s) for s in self.samples)

    def per_request(self, cpu: Callable[[Sample], float]) -> float:
        """The median over runs of a group's CPU ms per request."""
        return self.med(lambda s: s.per_request(cpu(s)))


@contextlib.contextmanager
def stopping(procs: list[subprocess.Popen[bytes]]) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def workers_row(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="conduit-bench-workers-"))
    why_not_native = native_available()
    kinds = ["python"] if why_not_native else ["native"]
    if not why_not_native and getattr(args, "python_tools", False):
        kinds.append("python")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with stopping(procs):
            tools = {}
            for kind in kinds:
                (tmp / kind).mkdir()
                tools[kind] = start_tools(kind, tmp / kind, f"bench-{kind}")
                procs.append(tools[kind].process)
            config = tmp / "bench.yaml"
            config.write_text(
                "providers: ["
                + ", ".join(
                    f"{{name: {k}, type: openai, base_url: 'http://127.0.0.1:{t.port}/v1', "
                    "api_key: sk-bench}"
                    for k, t in tools.items()
                )
                + "]\nmodels: ["
                + ", ".join(
                    f"{{name: {t.model}, deployments: [{{provider: {k}, model: gpt-4o-mini}}]}}"
                    for k, t in tools.items()
                )
                + "]\n"
            )
            env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUIT_")}
            env.update(
                CONDUIT_MASTER_KEY=MASTER,
                CONDUIT_LOG_LEVEL="WARNING",
                CONDUIT_SECRET_KEY="bench",  # noqa: S106 (a throwaway store)
                CONDUIT_EVENT_LOOP=args.event_loop,
                CONDUIT_STORE="local",
            )
            one = start_gateway(ONE, 1, config, env, tmp / "data-1", {0})
            procs.insert(0, one.process)
            two = start_gateway(TWO, 2, config, env, tmp / "data-2", None)
            procs.insert(0, two.process)
            held_env = {**env, "CONDUIT_WORKER_AFFINITY": "true"}
            held = start_gateway(HELD, 2, config, held_env, tmp / "data-held", None)
            procs.insert(0, held.process)
            variants = []
            for t in tools.values():
                variants += [
                    Variant(f"{ONE}, {TOOLS_PINNED}", one, t, {1}),
                    Variant(f"{ONE}, {TOOLS_FREE}", one, t, None),
                    Variant(f"{ONE}, {TOOLS_SHARED}", one, t, {0}),
                    Variant(f"{TWO}, {ALL_FREE}", two, t, None),
                    Variant(f"{HELD}, {TOOLS_FREE}", held, t, None),
                ]
            for v in variants:  # warm up: caches, pools, both workers' keys
                v.tools.drive(v.gateway.url, v.gateway.key, 2, v.tool_cpus)
            for _ in range(args.rounds):
                for v in variants:
                    v.measure(args.duration)
        report = _report(args, variants, tools, why_not_native)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"{datetime.now(UTC):%Y-%m-%d-%H%M}-workers.md"
    target.write_text(report)
    print(f"saved {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")
    return 0


def _report(
    args: argparse.Namespace,
    variants: list[Variant],
    tools: dict[str, Tools],
    why_not_native: str | None,
) -> str:
    uptime = Path("/proc/loadavg").read_text().split()[:3]
    lines = [
        f"# conduit-tornado workers row, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {versions().split('; load:')[0]}. Load average (1, 5, 15 min) at the end: "
        f"{', '.join(uptime)}.",
        f"Store: local (SQLite), one file per gateway. Event loop: {args.event_loop}. Chat, "
        f"{CONNECTIONS} connections, every limit on (rpm, tpm, max_parallel, budget). Runs: "
        f"{args.rounds} x {args.duration:g} s per variant, interleaved; medians.",
    ]
    for kind, t in tools.items():
        lines.append(f"Tools `{kind}`: {t.description}.")
    if why_not_native:
        lines.append(f"Native tools not used: {why_not_native}.")
    lines += [
        "Variants: `1 worker, core 0` is `serve --workers 1` pinned to core 0; `2 workers` is "
        "`serve --workers 2` (a supervisor and two workers sharing the port with "
        "SO_REUSEPORT) free on both cores; `tools core 1` pins the upstream and the driver "
        "to core 1, `tools core 0 too` to the gateway's core (what sharing a core with "
        "them costs the gateway), `tools free` / `all free` leave them free on both cores. "
        "`2 workers held one per core` is `serve --workers 2` with CONDUIT_WORKER_AFFINITY "
        "on.",
        "",
        "CPU columns are ms of CPU per request, read from /proc for each group; `others` is "
        "the rest of the machine's busy time over the same wall time (other sessions, the "
        "kernel's own threads), `steal` what the hypervisor took.",
        "",
        "| tools | variant | req/s | p50 ms | p99 ms | gateway (workers + supervisor) | "
        "supervisor | upstream | driver | cores busy (ours) | others, cores | steal, cores "
        "| errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for v in variants:
        per = v.per_request
        lines.append(
            f"| {v.tools.name} | {v.name} | {v.med(lambda s: s.run.rps):,.0f} | "
            f"{v.med(lambda s: s.run.p50):.2f} | {v.med(lambda s: s.run.p99):.2f} | "
            f"{per(lambda s: s.gateway):.3f} | {per(lambda s: s.supervisor):.4f} | "
            f"{per(lambda s: s.upstream):.3f} | {per(lambda s: s.driver):.3f} | "
            f"{v.med(lambda s: s.ours / s.wall):.2f} | "
            f"{v.med(lambda s: max(0.0, s.machine - s.ours) / s.wall):.2f} | "
            f"{v.med(lambda s: s.steal / s.wall):.2f} | "
            f"{sum(s.run.errors for s in v.samples)} |"
        )
    lines.append("")
    for kind in tools:
        group = {v.name: v for v in variants if v.tools.name == kind}
        pinned_one = group[f"{ONE}, {TOOLS_PINNED}"]
        free_one = group[f"{ONE}, {TOOLS_FREE}"]
        g1 = pinned_one.per_request(lambda s: s.gateway)
        u = pinned_one.per_request(lambda s: s.upstream + s.driver)
        rps1 = pinned_one.med(lambda s: s.run.rps)
        rps1_free = free_one.med(lambda s: s.run.rps)
        core0 = pinned_one.med(lambda s: s.workers / s.wall)
        parts = [
            f"Tools `{kind}`: one worker on core 0 (tools on core 1) served {rps1:,.0f} req/s "
            f"at G1 = {g1:.3f} ms of gateway CPU per request, keeping {core0:.2f} of core 0 "
            f"busy; upstream and driver took U = {u:.3f} ms per request. With nothing more per "
            f"request, two workers sharing both cores with the tools could reach "
            f"2 x G1 / (G1 + U) = **{2 * g1 / (g1 + u):.2f}x**."
        ]
        for name in (f"{TWO}, {ALL_FREE}", f"{HELD}, {TOOLS_FREE}"):
            both = group[name]
            g2 = both.per_request(lambda s: s.gateway)
            rps2 = both.med(lambda s: s.run.rps)
            parts.append(
                f"`{name}`: **{rps2 / rps1:.2f}x** ({rps2 / rps1_free:.2f}x one worker with the "
                f"tools free), G2 = {g2:.3f} ms ({g2 / g1:.2f}x G1), ceiling with that G2 "
                f"2 x G1 / (G2 + U) = {2 * g1 / (g2 + u):.2f}x."
            )
        lines.append(" ".join(parts))
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--python-tools",
        action="store_true",
        help="with nginx and wrk installed, also run every variant with the Python upstream "
        "and driver (the setup before native tools)",
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per variant")
    parser.add_argument("--event-loop", default="auto", choices=["auto", "asyncio", "uvloop"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    add_arguments(parser)
    return workers_row(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
