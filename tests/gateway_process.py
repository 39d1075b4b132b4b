"""``python -m tests.gateway_process``: a gateway with the mock provider, a model and a
virtual key, in a process of its own, watched by the loop-lag watchdog of tests/conftest.py.

For clients that block (schemathesis calls with requests): sharing a process, they would
hold the GIL the gateway's loop needs. Prints one JSON line ``{"url", "key"}`` when ready;
then answers each line read from stdin with the JSON list of loop stalls so far; stops at
the end of stdin."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from conduit_tornado import AdminClient, Gateway, Settings
from conduit_tornado.store import MemoryStore
from tests.conftest import MASTER_KEY, LoopWatchdog

MODEL = "m"  # the one virtual model, on the mock provider
ROOT = Path(__file__).resolve().parent.parent


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


class GatewayProcess:
    """This module run as a process beside the test process; ``env`` adds settings."""

    def __init__(self, **env: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.gateway_process"],
            cwd=ROOT,
            env={**os.environ, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None and self.process.stdin is not None
        self.stdin, self.stdout = self.process.stdin, self.process.stdout
        ready = json.loads(self.stdout.readline() or "null")
        assert ready is not None, "the gateway process did not start"
        self.url: str = ready["url"]
        self.key: str = ready["key"]

    def stalls(self) -> list[float]:
        """The loop stalls so far (the loop has turned since the last answer it sent)."""
        self.stdin.write("?\n")
        self.stdin.flush()
        stalls: list[float] = json.loads(self.stdout.readline())
        return stalls

    def stop(self) -> None:
        self.stdin.close()
        try:
            self.process.wait(timeout=20)
        finally:
            self.stdout.close()
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()


if __name__ == "__main__":
    asyncio.run(main())
