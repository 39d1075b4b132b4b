"""Soak and chaos run: mixed traffic with injected faults against a real gateway process,
all on loopback, then a reconciliation of what the gateway logged and billed against what
the upstream actually served. Not part of the test suite.

    .venv/bin/python bench/chaos.py [--duration 600] [--clients 8] [--seed 1]
                                    [--mongodb-uri URI] [--out FILE]

It starts the fake upstream (bench/chaos_upstream.py: resets, drips, hangs past the
first-byte timeout, gzip bombs, 500s, bad JSON, 429/503 storms with Retry-After), the
gateway (`python -m conduit_tornado serve`, configured through the admin API) and a
/health/live prober in its own process (so the driver's own load does not colour the
loop-lag figures). Clients send chat, streamed chat and embeddings, some invalid bodies,
requests on a key with a tight rpm, and client faults: disconnects mid-stream, a client
giving up on a plain call, slow readers of large streams, abandoned uploads and stalled
request heads. While it runs it samples the gateway's RSS (/proc) and /admin/v1/metrics
and pulls /admin/v1/logs (so the in-process store's log cap never hides a log).

Every request carries its id both as x-request-id (the gateway logs it) and in a marker in
its prompt (the fake upstream keys its ledger by it), so each log can be matched with what
was served. The report (Markdown, stdout and --out) gives requests and errors by cause,
RSS over time, loop lag, and the reconciliation. The exit status is 1 on a usage mismatch,
any 500, an error answer without the OpenAI envelope, a request that hung, a stream that
"succeeded" with no content and no error, an invalid body accepted, a stalled upload not
cut, an upstream call tried more than 1 + 2 times or left open after the gateway gave up
on it, dropped logs, the gateway dying, RSS growing more than --max-rss-growth-mb after
warm-up, or a /health/live probe slower than --max-lag-ms (a blocked event loop). Records,
the fake's ledger (with a per-attempt timeline) and the logs are kept in the run's working
directory (printed on stderr) when it fails, or with --keep.

To reproduce one finding, narrow the mix: ``--scenarios stream --faults gzip_bomb``.
``--gateway-src DIR`` runs the gateway from another checkout (a git worktree of a fixed
commit, while this one is being edited). The store is in-process unless ``--store local``
(a fresh SQLite file in the working directory) or ``--mongodb-uri`` (a database of its
own, dropped at the end): never the user's data directory.

Bounded: every loop stops at the deadline and after a fixed number of iterations, every
request has a timeout, and only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2

ROOT = Path(__file__).resolve().parent.parent
MASTER = "condt_master_chaos_" + "x" * 24
UPSTREAM_KEY = "sk-chaos-upstream"  # bench/chaos_upstream.py API_KEY
HOST = "127.0.0.1"
CLIENT_TIMEOUT = 60.0  # no request may take longer: the slowest planned path is ~25 s
BODY_TIMEOUT = 3.0  # CONDUIT_BODY_TIMEOUT / CONDUIT_HEADER_TIMEOUT for this run
CUT_SLACK = 12.0  # seconds past it before a stalled upload counts as never cut
FIRST_BYTE_TIMEOUT = (
    3.0  # the deployment's; 2 s above HOLD_PLAIN, so a loaded machine does not race them
)
MAX_REQUEST_BYTES = 1024 * 1024  # CONDUIT_MAX_REQUEST_BYTES for this run
LOG_OVERLAP = timedelta(seconds=60)  # pulls re-read this much: logs are written at the end
PULL_EVERY = 10.0
MEMORY_LOG_LIMIT = 3000  # logs the in-process store keeps; one pull reads at most ~70 s of them
RSS_EVERY = 2.0
METRICS_EVERY = 5.0

# Scenario weights (a seeded draw per request).
SCENARIOS = {
    "chat": 30,
    "stream": 25,
    "embeddings": 14,
    "invalid": 9,
    "tight_key": 4,
    "disconnect_stream": 5,
    "abandon_plain": 3,
    "slow_reader": 3,
    "abandoned_upload": 3,
    "stalled_head": 2,
}
# Upstream faults for chat / stream / embeddings (first attempt of a request only).
FAULTS = {
    "none": 58,
    "reset_head": 6,
    "reset_mid": 6,
    "drip": 8,
    "hang": 5,
    "gzip_bomb": 5,
    "error500": 6,
    "bad_json": 6,
}
INVALID = [
    "malformed_json",
    "no_messages",
    "messages_not_array",
    "n_zero",
    "unknown_model",
    "bad_key",
    "oversized",
    "empty_input",
    "deep_nesting",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def python() -> str:
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def proc_sample(pid: int) -> tuple[int, int, int]:
    """VmRSS and VmHWM (peak) of a process, in kB, and its open file descriptors."""
    rss = hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return rss, hwm, len(os.listdir(f"/proc/{pid}/fd"))


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


# -- records --------------------------------------------------------------------------------


@dataclass
class Rec:
    rid: str
    scenario: str
    fault: str = "none"
    variant: str = ""
    status: int | None = None
    code: str | None = None
    outcome: str = ""
    usage: tuple[int, int] | None = None  # (prompt, completion) the client saw
    seconds: float = 0.0
    envelope_ok: bool = True
    planned_hangup: bool = False  # the client itself left (not a failure)

    @property
    def cause(self) -> str:
        if self.status is None:
            return self.outcome
        return f"{self.status} {self.code or ''}".strip()


@dataclass
class Run:
    args: argparse.Namespace
    gateway_url: str = ""
    upstream_url: str = ""
    gateway_pid: int = 0
    key: str = ""
    key_id: str = ""
    tight: str = ""
    tight_id: str = ""
    started_wall: datetime = field(default_factory=lambda: datetime.now(UTC))
    deadline: float = 0.0
    records: list[Rec] = field(default_factory=list)
    inflight: dict[str, datetime] = field(default_factory=dict)
    rss: list[tuple[float, int, int, int]] = field(default_factory=list)  # s, kB, peak kB, fds
    metrics: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    logs: dict[str, dict[str, Any]] = field(default_factory=dict)  # log id -> log
    pulls: list[tuple[float, int, float]] = field(default_factory=list)  # (s, logs, seconds)
    pulled_until: datetime | None = None
    driver_lag: list[float] = field(default_factory=list)
    gateway_died: str | None = None
    final_error: str | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def _subset(self, table: dict[str, int], names: str | None) -> dict[str, int]:
        chosen = set(names.split(",")) if names else set(table)
        return {k: v for k, v in table.items() if k in chosen}

    @property
    def scenarios(self) -> dict[str, int]:
        return self._subset(SCENARIOS, self.args.scenarios)

    @property
    def faults(self) -> dict[str, int]:
        return self._subset(FAULTS, self.args.faults)

    def elapsed(self) -> float:
        return time.monotonic() - (self.deadline - float(self.args.duration))


# -- processes ------------------------------------------------------------------------------


class Processes:
    """The fake upstream, the gateway and the prober, stopped in reverse on exit."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start_upstream(self) -> str:
        port = free_port()
        proc = subprocess.Popen(
            [python(), str(ROOT / "bench/chaos_upstream.py"), str(port), str(self.args.seed)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / "upstream.err", "wb"),  # noqa: SIM115 (the child owns it)
        )
        self.procs.append(proc)
        wait_port(port, 60, proc)
        return f"http://{HOST}:{port}"

    def start_gateway(self) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUIT_")}
        env.update(
            {
                "CONDUIT_HOST": HOST,
                "CONDUIT_MASTER_KEY": MASTER,
                "CONDUIT_SECRET_KEY": "chaos-secret",
                "CONDUIT_LOG_LEVEL": "WARNING",
                "CONDUIT_LOG_FLUSH_INTERVAL": "1",
                "CONDUIT_RETRY_BACKOFF": "0.1",
                "CONDUIT_MAX_RETRY_WAIT": "2",
                "CONDUIT_HEADER_TIMEOUT": str(BODY_TIMEOUT),
                "CONDUIT_BODY_TIMEOUT": str(BODY_TIMEOUT),
                "CONDUIT_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
                # A small cap, so the in-process store stops growing early in the run and
                # RSS growth after warm-up means something; the pulls read every log first.
                "CONDUIT_MEMORY_LOG_LIMIT": str(MEMORY_LOG_LIMIT),
            }
        )
        # Never the user's own data: the store is in-process, a fresh file in this run's
        # directory, or a database of its own (dropped at the end).
        env["CONDUIT_STORE"] = self.args.store
        env["CONDUIT_DATA_DIR"] = str(self.tmp / "data")
        if self.args.mongodb_uri:
            env["CONDUIT_STORE"] = "mongodb"
            env["CONDUIT_MONGODB_URI"] = self.args.mongodb_uri
            env["CONDUIT_MONGODB_DATABASE"] = f"chaos_{os.getpid()}"
        proc = subprocess.Popen(
            [python(), "-m", "conduit_tornado", "serve", "--port", str(port)],
            env=env,
            cwd=self.args.gateway_src,  # python -m imports the package from here
            stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / "gateway.err", "wb"),  # noqa: SIM115
        )
        self.procs.append(proc)
        url = f"http://{HOST}:{port}"
        started = time.monotonic()
        while time.monotonic() - started < 60:
            if proc.poll() is not None:
                raise SystemExit(f"the gateway exited at start:\n{self.stderr_tail()}")
            try:
                if httpx2.get(url + "/health/ready", timeout=5).status_code == 200:
                    return url, proc
            except httpx2.TransportError:
                pass
            time.sleep(0.1)
        raise SystemExit("the gateway did not become ready within 60 s")

    def start_prober(self, port: int) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [
                python(),
                str(Path(__file__).resolve()),
                "--probe",
                str(port),
                str(self.args.probe_interval),
                str(self.args.duration + 5),
            ],
            stdout=open(self.tmp / "probe.txt", "wb"),  # noqa: SIM115
        )
        self.procs.append(proc)
        return proc

    def stderr_tail(self, lines: int = 20) -> str:
        path = self.tmp / "gateway.err"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def wait_port(port: int, seconds: float, proc: subprocess.Popen[bytes]) -> None:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if proc.poll() is not None:
            raise SystemExit(f"process {proc.args!r} exited at start")
        with socket.socket() as s:
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port} after {seconds} s")


def configure(run: Run) -> None:
    """Provider, models and two keys, through the admin API."""
    admin = {"Authorization": f"Bearer {MASTER}"}
    with httpx2.Client(base_url=run.gateway_url, headers=admin, timeout=30) as http:

        def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            r = http.post(path, json=body)
            if r.status_code >= 300:
                raise SystemExit(f"admin POST {path}: {r.status_code} {r.text}")
            result: dict[str, Any] = r.json()
            return result

        post(
            "/admin/v1/providers",
            {
                "name": "chaos-up",
                "type": "openai",
                "base_url": run.upstream_url + "/v1",
                "api_key": UPSTREAM_KEY,
            },
        )
        for name, model in (("chaos", "gpt-4o-mini"), ("chaos-embed", "text-embedding-3-small")):
            deployment = {
                "provider": "chaos-up",
                "model": model,
                "first_byte_timeout": FIRST_BYTE_TIMEOUT,
                "timeout": 30,
            }
            post("/admin/v1/models", {"name": name, "deployments": [deployment]})
        key = post(
            "/admin/v1/keys",
            {
                "name": "chaos",
                "rpm": 100_000_000,
                "tpm": 10**12,
                "max_parallel": 100_000,
                "max_budget": 10**9,
            },
        )
        tight = post("/admin/v1/keys", {"name": "chaos-tight", "rpm": 20})
        run.key, run.key_id = key["key"], key["id"]
        run.tight, run.tight_id = tight["key"], tight["id"]


# -- the prober (its own process) -----------------------------------------------------------


def complete(data: bytes) -> bool:
    """Whether ``data`` holds a whole HTTP answer with a Content-Length body."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def probe(port: int, interval: float, seconds: float) -> int:
    """GET /health/live every ``interval`` on a keep-alive connection; print
    ``elapsed_s latency_ms`` per probe (latency -1: failed). Bounded by ``seconds``."""
    request = f"GET /health/live HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    started = time.monotonic()
    sock: socket.socket | None = None
    for _ in range(int(seconds / interval) + 1):
        now = time.monotonic()
        if now - started > seconds:
            break
        t0 = time.perf_counter()
        try:
            if sock is None:
                sock = socket.create_connection((HOST, port), timeout=5)
            sock.sendall(request)
            data = b""
            for _ in range(64):  # the answer is ~150 bytes; a bound all the same
                piece = sock.recv(4096)
                if not piece:
                    raise ConnectionError("closed")
                data += piece
                if complete(data):
                    break
            latency = (time.perf_counter() - t0) * 1000
        except OSError:
            latency = -1.0
            if sock is not None:
                sock.close()
            sock = None
        print(f"{now - started:.3f} {latency:.3f}", flush=True)
        time.sleep(max(0.0, interval - (time.monotonic() - now)))
    return 0


# -- clients --------------------------------------------------------------------------------


def marker(rid: str, fault: str) -> str:
    return f"[chaos id={rid} fault={fault}]"


def chat_body(rid: str, fault: str, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "chaos",
        "messages": [{"role": "user", "content": f"Say something. {marker(rid, fault)}"}],
        "max_tokens": 64,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def read_error(rec: Rec, response: httpx2.Response, text: bytes) -> None:
    rec.status = response.status_code
    if response.status_code < 400:
        return
    try:
        error = json.loads(text)["error"]
        rec.code = error.get("code") or error.get("type")
        rec.envelope_ok = isinstance(error, dict) and {"message", "type", "param", "code"} <= set(
            error
        )
    except (ValueError, KeyError, TypeError):
        rec.envelope_ok = False
        rec.code = "(no envelope)"


async def plain(http: httpx2.AsyncClient, rec: Rec, path: str, body: dict[str, Any]) -> None:
    r = await http.post(path, json=body, headers={"x-request-id": rec.rid})
    read_error(rec, r, r.content)
    if r.status_code == 200:
        usage = r.json().get("usage") or {}
        rec.usage = (usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
        rec.outcome = "answered"


async def streamed(
    http: httpx2.AsyncClient,
    rec: Rec,
    body: dict[str, Any],
    *,
    leave_after: int | None = None,
    slow: bool = False,
) -> None:
    headers = {"x-request-id": rec.rid}
    async with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
        if r.status_code != 200:
            read_error(rec, r, await r.aread())
            return
        rec.status = 200
        events = 0
        if slow:  # a reader far slower than the stream: the gateway must wait, not buffer
            buffer = b""
            async for piece in r.aiter_raw(16384):  # ~320 kB/s: the ~2 MB stream takes ~7 s
                buffer += piece
                await asyncio.sleep(0.05)
            lines = buffer.decode(errors="replace").splitlines()
        else:
            lines = []
            async for line in r.aiter_lines():
                lines.append(line)
                if line.startswith("data: ") and line != "data: [DONE]":
                    events += 1
                    if leave_after is not None and events >= leave_after:
                        rec.outcome = "client left mid-stream (planned)"
                        rec.planned_hangup = True
                        return  # leaving the block closes the connection
        done = False
        content = 0
        for line in lines:
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                continue
            event = json.loads(line[6:])
            if "error" in event:
                rec.code = f"stream error event: {event['error'].get('code')}"
                rec.envelope_ok = {"message", "type", "param", "code"} <= set(event["error"])
            elif event.get("usage"):
                u = event["usage"]
                rec.usage = (u.get("prompt_tokens") or 0, u.get("completion_tokens") or 0)
            for choice in event.get("choices") or []:
                content += bool((choice.get("delta") or {}).get("content"))
        if rec.code is None:
            rec.outcome = "stream complete" if done else "stream ended without [DONE]"
            if not done:
                rec.code = "stream ended without [DONE]"
            elif not content:
                rec.code = rec.outcome = "empty stream: 200, [DONE], no content, no error"


def invalid_request(rid: str, variant: str, key: str) -> tuple[str, bytes, dict[str, str]]:
    headers = {
        "x-request-id": rid,
        "Authorization": f"Bearer {key}",
        "Content-Type": "application/json",
    }
    path = "/v1/chat/completions"
    good = chat_body(rid, "none")
    body: Any
    if variant == "malformed_json":
        return path, b'{"model": "chaos", "messages": [', headers
    if variant == "no_messages":
        body = {"model": "chaos"}
    elif variant == "messages_not_array":
        body = {**good, "messages": "hello"}
    elif variant == "n_zero":
        body = {**good, "n": 0}
    elif variant == "unknown_model":
        body = {**good, "model": "no-such-model"}
    elif variant == "bad_key":
        headers["Authorization"] = "Bearer condt_not_a_real_key_000000000000"
        body = good
    elif variant == "oversized":
        body = {**good, "padding": "x" * (MAX_REQUEST_BYTES + 512 * 1024)}
    elif variant == "empty_input":
        path, body = "/v1/embeddings", {"model": "chaos-embed", "input": []}
    else:  # deep_nesting: 5,000 nested arrays, where the gateway caps nesting
        deep = "[" * 5000 + "]" * 5000
        text = json.dumps(good)[:-1] + f', "metadata": {{"x": {deep}}}}}'
        return path, text.encode(), headers
    return path, json.dumps(body).encode(), headers


async def raw_upload(run: Run, rec: Rec, stalled_head: bool, abandon: bool) -> None:
    """An upload that stops half way (or a request head that stalls): the client either
    walks away, or waits to see the gateway cut the connection within its timeout."""
    port = int(run.gateway_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        if stalled_head:
            writer.write(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: app"
            )
        else:
            writer.write(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                + f"Authorization: Bearer {run.key}\r\nx-request-id: {rec.rid}\r\n".encode()
                + b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
                + b'{"model": "chaos", "messages": [{"role": "user", "content": "'
                + b"y" * 1000
            )
        await writer.drain()
        if abandon:
            await asyncio.sleep(0.3)
            rec.outcome = "client abandoned (planned)"
            rec.planned_hangup = True
            return
        t0 = time.monotonic()
        limit = BODY_TIMEOUT + CUT_SLACK
        try:
            data = await asyncio.wait_for(reader.read(4096), limit)
            for _ in range(64):
                if not data or complete(data):
                    break
                more = await asyncio.wait_for(reader.read(4096), limit)
                if not more:
                    break
                data += more
        except TimeoutError:
            rec.outcome = f"not cut by the gateway within {limit:.0f} s"
            return
        except ConnectionError:
            data = b""
        took = time.monotonic() - t0
        if data.startswith(b"HTTP/1.1 "):
            rec.status = int(data[9:12])
            rec.outcome = f"answered {rec.status} after {took:.1f} s"
            _, _, body = data.partition(b"\r\n\r\n")
            if rec.status >= 400 and body:
                try:
                    rec.envelope_ok = "error" in json.loads(body)
                except ValueError:
                    rec.envelope_ok = False
        else:
            rec.outcome = "closed by the gateway without an answer"
        rec.code = f"cut after {took:.0f}-{took + 1:.0f} s"
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def one_request(run: Run, http: httpx2.AsyncClient, rng: random.Random, rec: Rec) -> None:
    s = rec.scenario
    if s in ("chat", "stream", "embeddings"):
        faults = run.faults
        rec.fault = rng.choices(list(faults), weights=list(faults.values()))[0]
    if s == "chat":
        await plain(http, rec, "/v1/chat/completions", chat_body(rec.rid, rec.fault))
    elif s == "stream":
        await streamed(http, rec, chat_body(rec.rid, rec.fault, stream=True))
    elif s == "embeddings":
        texts = [f"embed me {marker(rec.rid, rec.fault)}", "and me"]
        await plain(
            http,
            rec,
            "/v1/embeddings",
            {"model": "chaos-embed", "input": texts[: rng.randint(1, 2)]},
        )
    elif s == "tight_key":
        headers = {"x-request-id": rec.rid, "Authorization": f"Bearer {run.tight}"}
        r = await http.post(
            "/v1/chat/completions", json=chat_body(rec.rid, "none"), headers=headers
        )
        read_error(rec, r, r.content)
        if r.status_code == 200:
            usage = r.json().get("usage") or {}
            rec.usage = (usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
    elif s == "invalid":
        rec.variant = rng.choice(INVALID)
        path, content, headers = invalid_request(rec.rid, rec.variant, run.key)
        r = await http.post(path, content=content, headers=headers)
        read_error(rec, r, r.content)
        if r.status_code < 400:
            rec.outcome = "invalid body accepted"
    elif s == "disconnect_stream":
        rec.fault = "hold"
        await streamed(http, rec, chat_body(rec.rid, "hold", stream=True), leave_after=2)
    elif s == "abandon_plain":
        rec.fault = "hold"
        try:
            await asyncio.wait_for(
                plain(http, rec, "/v1/chat/completions", chat_body(rec.rid, "hold")), 0.5
            )
        except TimeoutError:
            rec.outcome = "client gave up (planned)"
            rec.planned_hangup = True
    elif s == "slow_reader":
        rec.fault = "big"
        await streamed(http, rec, chat_body(rec.rid, "big", stream=True), slow=True)
    elif s == "abandoned_upload":
        rec.variant = rng.choice(["walk away", "wait for the cut"])
        await raw_upload(run, rec, stalled_head=False, abandon=rec.variant == "walk away")
    elif s == "stalled_head":
        rec.variant = "wait for the cut"
        await raw_upload(run, rec, stalled_head=True, abandon=False)


async def client(run: Run, index: int) -> None:
    rng = random.Random(run.args.seed * 1000 + index)
    limit = int(run.args.duration * 100) + 10  # a hard cap on iterations, whatever happens

    def new_client() -> httpx2.AsyncClient:
        return httpx2.AsyncClient(
            base_url=run.gateway_url,
            headers={"Authorization": f"Bearer {run.key}"},
            timeout=httpx2.Timeout(CLIENT_TIMEOUT),
        )

    http = new_client()
    try:
        for n in range(limit):
            if time.monotonic() >= run.deadline or run.stop.is_set():
                break
            mix = run.scenarios
            scenario = rng.choices(list(mix), weights=list(mix.values()))[0]
            rec = Rec(f"cx{run.args.seed}-{index}-{n}", scenario)
            run.inflight[rec.rid] = datetime.now(UTC)
            t0 = time.monotonic()
            try:
                await asyncio.wait_for(one_request(run, http, rng, rec), CLIENT_TIMEOUT)
            except TimeoutError:
                rec.outcome = "hung (client timeout)"
            except (httpx2.TransportError, ConnectionError) as exc:
                rec.outcome = f"transport error: {type(exc).__name__}"
            except Exception as exc:
                rec.outcome = f"client exception: {type(exc).__name__}: {exc}"[:200]
            rec.seconds = time.monotonic() - t0
            run.inflight.pop(rec.rid, None)
            run.records.append(rec)
            if rec.planned_hangup or rec.outcome.startswith(("transport", "hung")):
                await http.aclose()  # a fresh pool: never reuse a connection we walked away from
                http = new_client()
            await asyncio.sleep(rng.uniform(0, 0.02))
    finally:
        await http.aclose()


# -- samplers -------------------------------------------------------------------------------


async def sample_rss(run: Run, gateway: subprocess.Popen[bytes]) -> None:
    for _ in range(int(run.args.duration / RSS_EVERY) + 100):
        if gateway.poll() is not None:
            run.gateway_died = f"exit status {gateway.returncode} at {run.elapsed():.0f} s"
            run.stop.set()
            return
        run.rss.append((run.elapsed(), *proc_sample(gateway.pid)))
        if run.stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.stop.wait(), RSS_EVERY)


def parse_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("conduit_") and " " in line and "{" not in line:
            name, value = line.rsplit(" ", 1)
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


async def sample_metrics(run: Run, admin: httpx2.AsyncClient) -> None:
    for _ in range(int(run.args.duration / METRICS_EVERY) + 10):
        with contextlib.suppress(httpx2.HTTPError):
            r = await admin.get("/admin/v1/metrics")
            if r.status_code == 200:
                run.metrics.append((run.elapsed(), parse_metrics(r.text)))
        if run.stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.stop.wait(), METRICS_EVERY)


async def pull_logs(run: Run, admin: httpx2.AsyncClient) -> None:
    """Read the logs written since the last pull (with an overlap: a log is written when its
    request ends, but stamped when it began). Deduplicated by log id."""
    until = datetime.now(UTC)
    since = run.started_wall - timedelta(seconds=5)
    if run.pulled_until is not None:
        since = run.pulled_until - LOG_OVERLAP
    if run.inflight:
        since = min(since, min(run.inflight.values()) - timedelta(seconds=2))
    t0 = time.monotonic()
    count = 0
    offset = 0
    for _ in range(10_000):  # pages; bounded
        params: dict[str, str | int] = {
            "since": since.isoformat(),
            "until": until.isoformat(),
            "limit": 1000,
            "offset": offset,
        }
        r = await admin.get("/admin/v1/logs", params=params)
        r.raise_for_status()
        page = r.json()
        for log in page["data"]:
            run.logs[log["id"]] = log
        count += len(page["data"])
        if not page.get("has_more") or not page["data"]:
            break
        offset += len(page["data"])
    run.pulled_until = until
    run.pulls.append((run.elapsed(), count, time.monotonic() - t0))


async def puller(run: Run, admin: httpx2.AsyncClient) -> None:
    for _ in range(int(run.args.duration / PULL_EVERY) + 10):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.stop.wait(), PULL_EVERY)
        if run.stop.is_set():
            return
        with contextlib.suppress(httpx2.HTTPError):
            await pull_logs(run, admin)


async def driver_lag(run: Run) -> None:
    """How late this driver's own loop wakes (if high, client timings are the driver's)."""
    for _ in range(int(run.args.duration / 0.1) + 100):
        if run.stop.is_set():
            return
        t0 = time.perf_counter()
        await asyncio.sleep(0.1)
        run.driver_lag.append((time.perf_counter() - t0 - 0.1) * 1000)


# -- the run --------------------------------------------------------------------------------


async def drive(
    run: Run, gateway: subprocess.Popen[bytes]
) -> tuple[dict[str, Any], dict[str, Any]]:
    admin = httpx2.AsyncClient(
        base_url=run.gateway_url, headers={"Authorization": f"Bearer {MASTER}"}, timeout=60
    )
    run.deadline = time.monotonic() + run.args.duration
    background = [
        asyncio.create_task(sample_rss(run, gateway)),
        asyncio.create_task(sample_metrics(run, admin)),
        asyncio.create_task(puller(run, admin)),
        asyncio.create_task(driver_lag(run)),
    ]
    try:
        await asyncio.gather(*(client(run, i) for i in range(run.args.clients)))
    finally:
        run.stop.set()
        await asyncio.gather(*background, return_exceptions=True)
    usage: dict[str, Any] = {}
    ledger: dict[str, Any] = {}
    try:
        if run.gateway_died is None:
            await asyncio.sleep(3)  # two flush intervals: every finished request is recorded
            await pull_logs(run, admin)
            for key_id in (run.key_id, run.tight_id):
                params = {"key_id": key_id, "group_by": "key"}
                r = await admin.get("/admin/v1/usage", params=params)
                r.raise_for_status()
                usage[key_id] = r.json()["totals"]
            r = await admin.get("/admin/v1/metrics")
            run.metrics.append((run.elapsed(), parse_metrics(r.text)))
            run.rss.append((run.elapsed(), *proc_sample(gateway.pid)))
    except (httpx2.HTTPError, ValueError, KeyError, OSError) as exc:
        run.final_error = f"reading logs and usage after the run failed: {exc!r}"[:300]
    async with httpx2.AsyncClient(timeout=60) as http:
        ledger = (await http.get(run.upstream_url + "/__chaos/ledger")).json()
    await admin.aclose()
    return usage, ledger


# -- reconciliation and report --------------------------------------------------------------


@dataclass
class Reconciliation:
    mismatches: list[str] = field(default_factory=list)
    table: list[tuple[str, str, str, str]] = field(default_factory=list)  # what, fake, logs, usage
    estimated: Counter[str] = field(default_factory=Counter)  # status/code -> count
    estimated_tokens: list[int] = field(default_factory=lambda: [0, 0])


def reconcile(run: Run, ledger: dict[str, Any], usage: dict[str, Any]) -> Reconciliation:
    out = Reconciliation()
    served: dict[str, dict[str, Any]] = ledger.get("served", {})
    ours = {run.key_id, run.tight_id}
    by_rid: dict[str, list[dict[str, Any]]] = defaultdict(list)
    per_key: dict[str, Counter[str]] = defaultdict(Counter)
    billed = Counter[str]()
    for log in run.logs.values():
        if log.get("key_id") not in ours:
            continue
        by_rid[log.get("request_id") or "?"].append(log)
        k = per_key[log["key_id"]]
        k["requests"] += 1
        k["errors"] += int((log.get("status") or 200) >= 400)
        k["prompt_tokens"] += log.get("prompt_tokens") or 0
        k["completion_tokens"] += log.get("completion_tokens") or 0
        k["estimated_requests"] += int(bool(log.get("estimated")))
        if log.get("estimated"):
            out.estimated[f"{log.get('status')} {log.get('error_code') or ''}".strip()] += 1
            out.estimated_tokens[0] += log.get("prompt_tokens") or 0
            out.estimated_tokens[1] += log.get("completion_tokens") or 0
        elif (log.get("prompt_tokens") or 0) or (log.get("completion_tokens") or 0):
            billed["requests"] += 1
            billed["prompt"] += log.get("prompt_tokens") or 0
            billed["completion"] += log.get("completion_tokens") or 0
    for rid, extra in sorted(Counter[str](ledger.get("duplicates", [])).items()):
        out.mismatches.append(f"{rid}: the upstream completed it {extra + 1} times")
    for rid, logs in by_rid.items():
        if len(logs) > 1:
            out.mismatches.append(f"{rid}: logged {len(logs)} times")
    for rid, s in sorted(served.items()):
        logs = by_rid.get(rid, [])
        if not logs:
            out.mismatches.append(
                f"{rid}: served by the upstream ({s['prompt']}+{s['completion']} tokens) "
                "but not logged"
            )
            continue
        log = logs[0]
        got = (log.get("prompt_tokens") or 0, log.get("completion_tokens") or 0)
        if got != (s["prompt"], s["completion"]) or log.get("estimated"):
            out.mismatches.append(
                f"{rid}: served {s['prompt']}+{s['completion']} tokens, logged {got[0]}+{got[1]}"
                f"{' (estimated)' if log.get('estimated') else ''}, status {log.get('status')}"
            )
    for rid, logs in sorted(by_rid.items()):
        log = logs[0]
        tokens = (log.get("prompt_tokens") or 0) + (log.get("completion_tokens") or 0)
        if rid not in served and tokens and not log.get("estimated"):
            out.mismatches.append(
                f"{rid}: logged {tokens} measured tokens (status {log.get('status')}) "
                "but the upstream never completed it"
            )
    for rec in run.records:
        if rec.usage is None:
            continue
        seen = served.get(rec.rid)
        if seen is None:
            out.mismatches.append(f"{rec.rid}: the client got usage {rec.usage} never served")
        elif rec.usage != (seen["prompt"], seen["completion"]):
            out.mismatches.append(
                f"{rec.rid}: the client got usage {rec.usage}, the upstream reported "
                f"{(seen['prompt'], seen['completion'])}"
            )
    fake_prompt = sum(s["prompt"] for s in served.values())
    fake_completion = sum(s["completion"] for s in served.values())
    out.table += [
        (
            "requests completed by the upstream / logged with measured usage",
            str(len(served)),
            str(billed["requests"]),
            "",
        ),
        ("prompt tokens (measured)", str(fake_prompt), str(billed["prompt"]), ""),
        ("completion tokens (measured)", str(fake_completion), str(billed["completion"]), ""),
    ]
    if billed["requests"] != len(served) or billed["prompt"] != fake_prompt:
        out.mismatches.append("totals: measured requests or prompt tokens differ (see table)")
    if billed["completion"] != fake_completion:
        out.mismatches.append("totals: measured completion tokens differ (see table)")
    for key_id, name in ((run.key_id, "key chaos"), (run.tight_id, "key chaos-tight")):
        totals = usage.get(key_id, {})
        k = per_key.get(key_id, Counter())
        for f in ("requests", "errors", "prompt_tokens", "completion_tokens", "estimated_requests"):
            out.table.append(
                (f"{name}: {f} (all logs vs /admin/v1/usage)", "", str(k[f]), str(totals.get(f, 0)))
            )
            if int(totals.get(f, 0)) != k[f]:
                out.mismatches.append(
                    f"{name}: /admin/v1/usage {f} = {totals.get(f, 0)}, the logs sum to {k[f]}"
                )
    return out


def _ms(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (
        f"p50 {pct(values, 50):.1f}, p90 {pct(values, 90):.1f}, p99 {pct(values, 99):.1f}, "
        f"max {max(values):.1f}"
    )


def report(
    run: Run, ledger: dict[str, Any], rec: Reconciliation, tmp: Path, load: tuple[str, str]
) -> tuple[str, list[str]]:
    a = run.args
    failures: list[str] = []
    lines = [
        f"# conduit-tornado chaos run, {run.started_wall:%Y-%m-%d %H:%M} UTC",
        "",
        f"Duration {a.duration:g} s, {a.clients} clients, seed {a.seed}, store "
        f"{'mongodb' if a.mongodb_uri else a.store}; {os.cpu_count()} cores, load average "
        f"{load[0]} at start and {load[1]} at the end (the machine is shared: other work runs "
        "beside this, so latencies are indicative only). Gateway settings: header/body timeout "
        f"{BODY_TIMEOUT:g} s, max request {MAX_REQUEST_BYTES // 1024} KiB, deployment "
        f"first-byte timeout {FIRST_BYTE_TIMEOUT:g} s, retries 2.",
        "",
        "## Requests by scenario and outcome",
        "",
        "| scenario | upstream fault / variant | requests | outcomes (status code: count) |",
        "|---|---|---:|---|",
    ]
    groups: dict[tuple[str, str], list[Rec]] = defaultdict(list)
    for r in run.records:
        groups[(r.scenario, r.variant or r.fault)].append(r)
    for (scenario, sub), recs in sorted(groups.items()):
        causes = Counter(r.cause if r.status is not None else r.outcome for r in recs)
        shown = ", ".join(f"{c}: {n}" for c, n in causes.most_common())
        lines.append(f"| {scenario} | {sub} | {len(recs)} | {shown} |")
    total = len(run.records)
    lines += [
        "",
        f"{total} requests in {a.duration:g} s ({total / a.duration:.1f}/s).",
        "",
        "## Errors by cause (what clients saw)",
        "",
        "| status | code | count |",
        "|---:|---|---:|",
    ]
    error_causes = Counter(
        (r.status or 0, r.code or "") for r in run.records if (r.status or 0) >= 400
    )
    for (status, code), n in sorted(error_causes.items(), key=lambda kv: (kv[0][0] or 0, kv[0][1])):
        lines.append(f"| {status} | {code} | {n} |")
    stream_errors = Counter(
        r.code
        for r in run.records
        if r.status == 200 and r.code and r.code.startswith(("stream", "empty"))
    )
    for code, n in stream_errors.most_common():
        lines.append(f"| 200 | {code} | {n} |")
    other = Counter(r.outcome for r in run.records if r.status is None)
    for outcome, n in other.most_common():
        lines.append(f"| - | {outcome} | {n} |")

    # failures seen by clients
    five_hundreds = [r for r in run.records if r.status == 500]
    if five_hundreds:
        failures.append(
            f"{len(five_hundreds)} answers were 500: "
            + ", ".join(
                f"{r.rid} ({r.scenario}/{r.fault or r.variant})" for r in five_hundreds[:10]
            )
        )
    logged_500 = [lg for lg in run.logs.values() if lg.get("status") == 500]
    if logged_500:
        failures.append(
            f"{len(logged_500)} logs have status 500: "
            + ", ".join(str(lg.get("request_id")) for lg in logged_500[:10])
        )
    bad_env = [r for r in run.records if not r.envelope_ok]
    if bad_env:
        failures.append(
            f"{len(bad_env)} error answers lacked the OpenAI error envelope: "
            + ", ".join(
                f"{r.rid} ({r.scenario}/{r.variant or r.fault}, {r.status})" for r in bad_env[:10]
            )
        )
    hung = [r for r in run.records if r.outcome.startswith("hung")]
    if hung:
        failures.append(
            f"{len(hung)} requests hung past {CLIENT_TIMEOUT:g} s: "
            + ", ".join(
                f"{r.rid} ({r.scenario}/{r.variant or r.fault}: {r.outcome})" for r in hung[:10]
            )
        )
    uncut = [r for r in run.records if r.outcome.startswith("not cut")]
    if uncut:
        failures.append(
            f"{len(uncut)} stalled uploads or request heads were not cut within "
            f"{BODY_TIMEOUT:g} s (+{CUT_SLACK:g} s slack for a loaded machine): "
            + ", ".join(f"{r.rid} ({r.scenario})" for r in uncut[:10])
        )
    empty = [r for r in run.records if r.outcome.startswith("empty stream")]
    if empty:
        failures.append(
            f"{len(empty)} streams ended as a success with no content and no error event: "
            + ", ".join(f"{r.rid} ({r.scenario}/{r.fault})" for r in empty[:10])
        )
    accepted = [r for r in run.records if r.outcome == "invalid body accepted"]
    if accepted:
        failures.append(
            f"{len(accepted)} invalid bodies were accepted: "
            + ", ".join(f"{r.rid} ({r.variant})" for r in accepted[:10])
        )
    crashed = [r for r in run.records if r.outcome.startswith("client exception")]
    if crashed:
        failures.append(f"{len(crashed)} client exceptions (a driver bug?): {crashed[0].outcome}")
    if run.gateway_died:
        failures.append(f"the gateway died: {run.gateway_died}")
    if run.final_error:
        failures.append(run.final_error)

    # upstream
    lines += [
        "",
        "## The fake upstream",
        "",
        f"Attempts {sum(ledger.get('attempts', {}).values())} for "
        f"{len(ledger.get('attempts', {}))} request ids; served {len(ledger.get('served', {}))}. "
        f"Faults applied (attempts): {json.dumps(ledger.get('faults', {}), sort_keys=True)}. "
        f"Storm windows so far {ledger.get('storms', [])} answered "
        f"{json.dumps(ledger.get('storm_answers', {}))}. Held calls ended: "
        f"{json.dumps(ledger.get('holds', {}), sort_keys=True)} (stream/plain closed: the gateway "
        "hung up when its client left; hang closed: it hung up after its first-byte timeout; "
        "*_timeout: it kept the upstream connection open). Unmarked requests "
        f"{ledger.get('unmarked', 0)}, unauthorized {ledger.get('unauthorized', 0)}.",
    ]
    attempts = ledger.get("attempts", {})
    if attempts:
        most = max(attempts.values())
        spread = Counter(attempts.values())
        lines.append(
            f"Upstream attempts per request id: {dict(sorted(spread.items()))} (most {most}; "
            "the gateway's cap is 1 + 2 retries)."
        )
        if most > 3:
            failures.append(f"a request was tried upstream {most} times (cap 3)")

    holds = ledger.get("holds", {})
    for kind, what in (
        ("hang_timeout", "after a first-byte timeout"),
        ("stream_timeout", "after its client left a stream"),
    ):
        if holds.get(kind):
            failures.append(
                f"the gateway left {holds[kind]} upstream connections open {what} (the upstream "
                "kept working for nobody)"
            )

    # RSS
    lines += ["", "## Gateway memory and descriptors (/proc, sampled every 2 s)", ""]
    if run.rss:
        step = max(1, -(-len(run.rss) // 12))
        shown_rss = run.rss[::step] + ([run.rss[-1]] if (len(run.rss) - 1) % step else [])
        lines.append("| t (s) | RSS (MB) | peak so far (MB) | open fds |")
        lines.append("|---:|---:|---:|---:|")
        for t, rss, hwm, fds in shown_rss:
            lines.append(f"| {t:.0f} | {rss / 1024:.1f} | {hwm / 1024:.1f} | {fds} |")
        warm = [rss for t, rss, _, _ in run.rss if t >= a.duration * 0.2] or [run.rss[-1][1]]
        growth = (run.rss[-1][1] - warm[0]) / 1024
        peak = max(h for _, _, h, _ in run.rss) / 1024
        lines.append(
            f"\nGrowth after warm-up (20% of the run to the end): {growth:+.1f} MB "
            f"(threshold {a.max_rss_growth_mb:g} MB); peak {peak:.1f} MB."
        )
        if growth > a.max_rss_growth_mb:
            failures.append(f"RSS grew {growth:.1f} MB after warm-up (> {a.max_rss_growth_mb:g})")

    # loop lag
    probes = []
    probe_path = tmp / "probe.txt"
    if probe_path.exists():
        for line in probe_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                at, latency = line.split()
                probes.append((float(at), float(latency)))
    ok = [ms for _, ms in probes if ms >= 0]
    lines += [
        "",
        "## Loop lag, from outside",
        "",
        f"GET /health/live every {a.probe_interval:g} s from a separate process, {len(probes)} "
        f"probes, {len(probes) - len(ok)} failed (no answer within 5 s). Latency ms: {_ms(ok)}.",
    ]
    stalls = [(t, ms) for t, ms in probes if ms < 0 or ms > a.max_lag_ms]
    if stalls:
        worst = max(5000.0 if ms < 0 else ms for _, ms in stalls)
        failures.append(
            f"the gateway's event loop stalled: {len(stalls)} /health/live probes took over "
            f"{a.max_lag_ms:g} ms or got no answer within 5 s (worst {worst:.0f} ms; first at "
            f"{stalls[0][0]:.0f} s)"
        )
    if probes:
        lines += [
            "",
            "| window (s) | probes | p50 ms | p99 ms | max ms |",
            "|---|---:|---:|---:|---:|",
        ]
        width = max(a.duration / 6, 1)
        for w in range(int(a.duration / width) + 1):
            sel = [ms for t, ms in probes if w * width <= t < (w + 1) * width and ms >= 0]
            if sel:
                lines.append(
                    f"| {w * width:.0f}-{(w + 1) * width:.0f} | {len(sel)} | {pct(sel, 50):.1f} | "
                    f"{pct(sel, 99):.1f} | {max(sel):.1f} |"
                )
    lines.append(
        f"\nThe driver's own loop wake-up delay (ms): {_ms(run.driver_lag)} (client-side "
        "timings include this)."
    )
    if run.pulls:
        pull_s = [p[2] * 1000 for p in run.pulls]
        lines.append(
            f"Log pulls (GET /admin/v1/logs every {PULL_EVERY:g} s, pages of 1000): {len(run.pulls)}, "
            f"{sum(p[1] for p in run.pulls)} logs read, duration ms {_ms(pull_s)} (as the driver "
            "saw them)."
            + (
                " The in-process store filters and sorts in the event loop, so pulls show in "
                "the lag above."
                if a.store == "memory" and not a.mongodb_uri
                else ""
            )
        )
    if (
        run.pulls
        and max(p[1] for p in run.pulls) > 0.8 * MEMORY_LOG_LIMIT
        and a.store == "memory"
        and not a.mongodb_uri
    ):
        failures.append(
            f"a log pull read {max(p[1] for p in run.pulls)} logs, near the in-process store's "
            f"cap ({MEMORY_LOG_LIMIT}): logs may have been pruned unread (fewer clients, or "
            "--store local)"
        )
    if run.metrics:
        last = run.metrics[-1][1]
        peak_inflight = max(m.get("conduit_in_flight_requests", 0) for _, m in run.metrics)
        lines.append(
            f"/admin/v1/metrics at the end: in flight {last.get('conduit_in_flight_requests', 0):g} "
            f"(peak sampled {peak_inflight:g}), logs written {last.get('conduit_logs_written_total', 0):g}, "
            f"pending {last.get('conduit_logs_pending', 0):g}, dropped "
            f"{last.get('conduit_logs_dropped_total', 0):g}."
        )
        if last.get("conduit_logs_dropped_total", 0):
            failures.append("the gateway dropped request logs (queue full)")

    # reconciliation
    lines += [
        "",
        "## Reconciliation: logged usage against what the upstream served",
        "",
        "| what | fake upstream | gateway logs | /admin/v1/usage |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {w} | {f} | {lg} | {u} |" for w, f, lg, u in rec.table]
    lines.append(
        f"\nLogs with estimated usage (no usage from upstream: the stream broke or the client "
        f"left): {sum(rec.estimated.values())}, by status {dict(rec.estimated)}, "
        f"{rec.estimated_tokens[0]} prompt + {rec.estimated_tokens[1]} completion tokens "
        "(billed by estimate; not in the upstream's ledger by design)."
    )
    if rec.mismatches:
        failures.append(f"{len(rec.mismatches)} reconciliation mismatches")
        lines += ["", f"Mismatches ({len(rec.mismatches)}, first 50):", ""]
        by_rid = {r.rid: r for r in run.records}

        def context(line: str) -> str:
            r = by_rid.get(line.split(":", 1)[0])
            if r is None:
                return line
            saw = r.cause if r.status is not None else r.outcome
            return f"{line} [{r.scenario}/{r.variant or r.fault}; the client saw {saw or '?'} after {r.seconds:.1f} s]"

        lines += [f"- {context(m)}" for m in rec.mismatches[:50]]
    else:
        lines.append("\nNo mismatch: every served request is logged once with exactly its tokens.")

    # gateway stderr
    err = (
        (tmp / "gateway.err").read_text(errors="replace") if (tmp / "gateway.err").exists() else ""
    )
    errors = [ln for ln in err.splitlines() if " ERROR " in ln or "Traceback" in ln]
    lines += ["", "## Gateway log (stderr, WARNING and above)", ""]
    kinds = Counter(ln.split(" - ")[-1][:120] if " - " in ln else ln[-120:] for ln in errors)
    lines.append(f"{len(err.splitlines())} lines, {len(errors)} at ERROR or tracebacks.")
    for text, n in kinds.most_common(8):
        lines.append(f"- {n}x `{text.strip()}`")

    lines += ["", "## Verdict", ""]
    if failures:
        lines += ["FAIL:", ""] + [f"- {f}" for f in failures]
        lines.append(
            "\nTo reproduce one, narrow the run to its scenario and fault (shown as "
            "scenario/fault above), e.g. `bench/chaos.py --duration 15 --clients 2 "
            "--scenarios stream --faults bad_json`; the working directory keeps the records, "
            "the upstream's per-attempt timeline and the logs."
        )
    else:
        lines.append("PASS: no mismatch, no 500, no hang, no loop stall, RSS within the threshold.")
    return "\n".join(lines) + "\n", failures


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--probe":
        return probe(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of traffic")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mongodb-uri", help="a MongoDB for the store (default: in-process)")
    parser.add_argument(
        "--store",
        choices=["memory", "local"],
        default="memory",
        help="without --mongodb-uri: in-process, or a fresh local (SQLite) file in the run's "
        "working directory",
    )
    parser.add_argument("--out", type=Path, help="also write the report here")
    parser.add_argument("--probe-interval", type=float, default=0.2)
    parser.add_argument("--max-rss-growth-mb", type=float, default=64.0)
    parser.add_argument(
        "--keep", action="store_true", help="keep the working directory after a passing run too"
    )
    parser.add_argument(
        "--max-lag-ms",
        type=float,
        default=2000.0,
        help="a /health/live probe slower than this fails the run (a blocked event loop; "
        "generous, because the machine may be shared)",
    )
    parser.add_argument(
        "--gateway-src",
        type=Path,
        default=ROOT,
        help="checkout whose conduit_tornado runs (default: this one), e.g. a git worktree "
        "of a fixed commit while the working tree is being edited",
    )
    parser.add_argument(
        "--scenarios",
        help=f"comma-separated subset of {','.join(SCENARIOS)} (to reproduce one finding)",
    )
    parser.add_argument(
        "--faults", help=f"comma-separated subset of {','.join(FAULTS)} for chat/stream/embeddings"
    )
    args = parser.parse_args()
    for name, table in (("scenarios", SCENARIOS), ("faults", FAULTS)):
        unknown = set((getattr(args, name) or "").split(",")) - set(table) - {""}
        if unknown:
            parser.error(f"unknown {name}: {', '.join(sorted(unknown))}")
    if not 1 <= args.clients <= 256 or not 1 <= args.duration <= 24 * 3600:
        parser.error("--clients must be 1-256 and --duration 1 s to 24 h")
    tmp = Path(tempfile.mkdtemp(prefix="conduit-chaos-"))
    procs = Processes(args, tmp)
    load_start = Path("/proc/loadavg").read_text().split()[0]
    try:
        run = Run(args)
        run.upstream_url = procs.start_upstream()
        run.gateway_url, gateway = procs.start_gateway()
        run.gateway_pid = gateway.pid
        configure(run)
        procs.start_prober(int(run.gateway_url.rsplit(":", 1)[1]))
        run.started_wall = datetime.now(UTC)
        usage, ledger = asyncio.run(drive(run, gateway))
    finally:
        procs.stop()
        if args.mongodb_uri:
            import pymongo

            mongo: pymongo.MongoClient[dict[str, Any]]
            with (
                contextlib.suppress(Exception),
                pymongo.MongoClient(args.mongodb_uri, serverSelectionTimeoutMS=5000) as mongo,
            ):
                mongo.drop_database(f"chaos_{os.getpid()}")
    load_end = Path("/proc/loadavg").read_text().split()[0]
    rec = reconcile(run, ledger, usage)
    (tmp / "ledger.json").write_text(json.dumps(ledger))
    (tmp / "logs.json").write_text(json.dumps(list(run.logs.values()), default=str))
    (tmp / "records.jsonl").write_text("".join(json.dumps(r.__dict__) + "\n" for r in run.records))
    text, failures = report(run, ledger, rec, tmp, (load_start, load_end))
    print(text)
    if args.out:
        args.out.write_text(text)
    if failures or args.keep:
        print(f"(working files: {tmp})", file=sys.stderr)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
