"""Store operations per request: what the hot path asks of the store, counted.

On MongoDB every store operation is a round trip plus PyMongo's own CPU (~0.35 ms per
operation measured on our 2-core machine against a wire server, more than the whole
memory-store request path), so this count, not the memory store's speed, decides how
close the MongoDB numbers can come to the memory-store ones. It is exact and does not
depend on the machine's speed.

    .venv/bin/python bench/store_ops.py [--requests 3000] [--connections 32]

Runs a real gateway in this process on a counting in-process store, our fast upstream
(bench/upstream.py) in a subprocess, and chat requests through HTTP; counts every store
call between a warm-up and the end of the run (background writes included, flushed at
the end), per request, for a key with every limit on and a key with none.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import httpx2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from conduit_tornado import AdminClient, Gateway, Settings  # noqa: E402
from conduit_tornado.store import MemoryStore, Store  # noqa: E402

MASTER = "condt_master_bench_" + "x" * 24
CHAT = {"model": "bench", "messages": [{"role": "user", "content": "Say hello"}]}


class CountingStore:
    """The in-process store, counting the calls made to it by name."""

    def __init__(self) -> None:
        self._store = MemoryStore()
        self.calls: collections.Counter[str] = collections.Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return await attr(*args, **kwargs)

        return counted


async def _drive(url: str, key: str, requests: int, connections: int) -> None:
    limits = httpx2.Limits(max_connections=connections)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx2.AsyncClient(limits=limits, timeout=30) as http:
        left = iter(range(requests))

        async def worker() -> None:
            for _ in left:
                r = await http.post(url, json=CHAT, headers=headers)
                assert r.status_code == 200, r.text

        await asyncio.gather(*(worker() for _ in range(connections)))


async def measure(requests: int, connections: int, upstream_port: int) -> None:
    store = CountingStore()
    gateway = Gateway(
        Settings(host="127.0.0.1", port=0, master_key=MASTER), store=cast(Store, store)
    )
    await gateway.start()
    try:
        async with AdminClient(gateway.url, MASTER) as admin:
            await admin.create_provider(
                name="up",
                type="openai",
                base_url=f"http://127.0.0.1:{upstream_port}/v1",
                api_key="sk-bench",
            )
            await admin.create_model(
                name="bench", deployments=[{"provider": "up", "model": "gpt-4o-mini"}]
            )
            limited = await admin.create_key(
                name="limited", rpm=100_000_000, tpm=10**12, max_parallel=100_000, max_budget=1e9
            )
            plain = await admin.create_key(name="plain")
        url = gateway.url + "/v1/chat/completions"
        assert gateway.ctx is not None
        print(f"{requests} chat requests, {connections} connections, per request:")
        for label, key in (("every limit on", limited["key"]), ("no limits", plain["key"])):
            await _drive(url, key, 200, connections)  # warm: caches, leases, pools
            await gateway.ctx.limiter.flush()
            await gateway.ctx.recorder.flush()
            store.calls.clear()
            started = time.perf_counter()
            await _drive(url, key, requests, connections)
            elapsed = time.perf_counter() - started
            await gateway.ctx.limiter.flush()
            await gateway.ctx.recorder.flush()
            total = sum(store.calls.values())
            parts = ", ".join(
                f"{name} {n / requests:.3f}" for name, n in sorted(store.calls.items())
            )
            print(f"  {label}: {total / requests:.3f} store operations ({parts})")
            print(f"    ({elapsed:.1f} s; background writes included)")
    finally:
        await gateway.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    from run import free_port

    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(ROOT / "bench/upstream.py"), str(port)], stdout=subprocess.DEVNULL
    )
    try:
        time.sleep(0.5)
        asyncio.run(measure(args.requests, args.connections, port))
    finally:
        upstream.terminate()
        upstream.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
