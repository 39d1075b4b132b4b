"""``python -m tests.gateway_process``: a gateway with the mock provider, a model and a
virtual key, in a process of its own, watched by the loop-lag watchdog of tests/conftest.py.

For clients that block (schemathesis calls with requests): sharing a process, they would
hold the GIL the gateway's loop needs. Prints one JSON line ``{"url", "key"}`` when ready;
then answers each line read from stdin with the JSON list of loop stalls so far; stops at
the end of stdin."""

from __future__ import annotations

import asyncio
import json
import sys

from conduit_tornado import AdminClient, Gateway, Settings
from conduit_tornado.store import MemoryStore
from tests.conftest import MASTER_KEY, LoopWatchdog

MODEL = "m"  # the one virtual model, on the mock provider


async def main() -> None:
    loop = asyncio.get_running_loop()
    gateway = Gateway(
        Settings(host="127.0.0.1", port=0, master_key=MASTER_KEY), store=MemoryStore()
    )
    await gateway.start()
    async with AdminClient(gateway.url, MASTER_KEY) as admin:
        await admin.create_provider(name="mock", type="mock")
        await admin.create_model(name=MODEL, deployments=[{"provider": "mock", "model": "mock-1"}])
        key = (await admin.create_key(name="schemathesis"))["key"]
    # Watched from here: the set-up above is the test's (a cold AdminClient takes its time).
    watchdog = LoopWatchdog(loop)
    watchdog.start()
    print(json.dumps({"url": gateway.url, "key": key}), flush=True)
    try:
        while await loop.run_in_executor(None, sys.stdin.readline):
            print(json.dumps(watchdog.stalls), flush=True)
    finally:
        await gateway.stop()
        watchdog.stop()


if __name__ == "__main__":
    asyncio.run(main())
