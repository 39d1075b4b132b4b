"""The real ``conduit-tornado serve`` as a process beside the test, on the local store in
a temporary directory, with the test's fake provider declared in a config file."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

from tests.conftest import MASTER_KEY
from tests.fakes.providers import API_KEY

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"listening on (\S+)(?: with (\d+) workers, pids ([\d ]+))?")


class Served:
    """``await Served.start(tmp_path, fake_url, "--workers", "2")``; ``lines`` holds
    everything it has written to stderr so far."""

    def __init__(self, process: asyncio.subprocess.Process, supervised: bool) -> None:
        self.process = process
        self.supervised = supervised  # ready once the supervisor says all workers are
        self.lines: list[str] = []
        self.url = ""
        self.pids: list[int] = []
        self._reader: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @classmethod
    async def start(
        cls, tmp: Path, fake_url: str, *args: str, env: dict[str, str] | None = None
    ) -> Served:
        config = tmp / "providers.yaml"
        config.write_text(
            f"providers: [{{name: fake, type: openai, base_url: '{fake_url}/v1', "
            f"api_key: {API_KEY}}}]\n"
            "models: [{name: m, deployments: [{provider: fake, model: gpt-4o-mini}]}]\n"
        )
        clean = {k: v for k, v in os.environ.items() if not k.startswith("CONDUIT_")}
        clean.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the supervisor makes one unless given
        clean.update(
            CONDUIT_DATA_DIR=str(tmp / "data"),
            CONDUIT_MASTER_KEY=MASTER_KEY,
            CONDUIT_LOG_LEVEL="INFO",
        )
        clean.update(env or {})
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "conduit_tornado",
            "serve",
            "--port",
            "0",
            "--config",
            str(config),
            *args,
            cwd=ROOT,
            env=clean,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        at = args.index("--workers") if "--workers" in args else -1
        served = cls(process, at >= 0 and args[at + 1] != "1")
        served._reader = asyncio.create_task(served._read())
        try:
            await asyncio.wait_for(asyncio.shield(served._ready), 90)
        except BaseException:
            await served.kill()
            raise
        return served

    async def _read(self) -> None:
        assert self.process.stderr is not None
        while line := (await self.process.stderr.readline()).decode(errors="replace"):
            self.lines.append(line)
            found = READY.search(line)
            if found and not self._ready.done() and (found[2] or not self.supervised):
                self.url = found[1]
                self.pids = [int(p) for p in (found[3] or "").split()]
                self._ready.set_result(None)
        if not self._ready.done():
            self._ready.set_exception(RuntimeError("serve ended:\n" + "".join(self.lines)))

    async def output_ended(self) -> None:
        """Until no process writes to its stderr (the supervisor's and its workers')."""
        assert self._reader is not None
        await asyncio.shield(self._reader)

    def log(self) -> str:
        return "".join(self.lines)

    async def wait_for_line(self, pattern: str, within: float = 60, count: int = 1) -> str:
        """The count-th line matching ``pattern``, once written."""
        async with asyncio.timeout(within):
            while True:
                found = [line for line in self.lines if re.search(pattern, line)]
                if len(found) >= count:
                    return found[count - 1]
                await asyncio.sleep(0.05)

    async def stop(self, within: float = 60) -> int:
        """SIGTERM, then the exit status."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), within)
        finally:
            await self.kill()

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        if self._reader is not None:
            await self._reader
