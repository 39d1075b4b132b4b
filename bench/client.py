"""The provider client alone: CPU per call of ``routing/upstream.py`` (pyreqwest underneath)
with 32 calls in flight to bench/upstream.py on loopback, for a chat.completion read whole
and for a 20-chunk SSE stream read event by event. The process (Python and pyreqwest's
Tokio thread) is pinned to core 0, the upstream to core 1; CPU is the process's own
(``time.process_time``, all threads), so the upstream's work is not in it.

    .venv/bin/python bench/client.py [--seconds 5] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from conduit_tornado.core.settings import Settings  # noqa: E402
from conduit_tornado.routing.upstream import (  # noqa: E402
    SseReader,
    Timeouts,
    Upstream,
    read_body,
)

T = Timeouts(connect=5.0, first_byte=None, total=30.0)
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def one_json(upstream: Upstream, url: str) -> None:
    answer = await upstream.request("bench", "POST", url, T, json=CHAT)
    await read_body(answer)


async def one_stream(upstream: Upstream, url: str) -> None:
    answer = await upstream.request("bench", "POST", url, T, json={**CHAT, "stream": True})
    reader = SseReader(answer)
    while await reader.next_batch() is not None:
        pass
    await answer.aclose()


async def measure(kind: str, url: str, seconds: float, concurrency: int) -> tuple[float, float]:
    """(CPU microseconds per call, calls per second)."""
    call = one_stream if kind == "stream" else one_json
    upstream = Upstream(Settings())
    done = 0
    stop = 0.0

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < stop:
            await call(upstream, url)
            done += 1

    stop = time.monotonic() + min(1.0, seconds / 4)  # warm: connections open, code hot
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    done = 0
    cpu, wall = time.process_time(), time.monotonic()
    stop = wall + seconds
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    await upstream.close()
    return cpu / done * 1e6, done / wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(ROOT / "bench/upstream.py"), str(port)],
        stdout=subprocess.PIPE,
        preexec_fn=(lambda: os.sched_setaffinity(0, {1})) if cores > 1 else None,
    )
    try:
        assert upstream.stdout is not None
        upstream.stdout.readline()  # "upstream listening on ..."
        os.sched_setaffinity(0, {0})  # threads started from now on (Tokio's) inherit it
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        factory = None
        if args.loop == "uvloop":
            import uvloop

            factory = uvloop.new_event_loop
        print(f"| call ({args.concurrency} in flight, {args.loop}) | CPU µs/call | calls/s |")
        print("|---|---|---|")
        for kind in ("json", "stream"):
            with asyncio.Runner(loop_factory=factory) as runner:
                cpu, rate = runner.run(measure(kind, url, args.seconds, args.concurrency))
            print(f"| {kind} | {cpu:.0f} | {rate:.0f} |", flush=True)
    finally:
        upstream.terminate()
        upstream.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
