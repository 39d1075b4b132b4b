"""The real ``conduit-tornado serve`` as a process beside the test: the one way tests start
it. Settings come from the environment the test gives (nothing of the test process's own
CONDUIT_* or OTEL_* leaks in), the local store in a directory of the test's, and a config
file when the test names providers (its fake provider, or a text of its own)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import httpx2

from conduit_tornado import AdminClient
from tests.conftest import MASTER_KEY, clear_of_minute_end
from tests.fakes.providers import API_KEY

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"listening on (\S+)(?: with (\d+) workers, pids ([\d ]+))?")
COMMAND = (sys.executable, "-m", "conduit_tornado", "serve")


def fake_config(fake_url: str) -> str:
    """One OpenAI-style provider at the fake, and model ``m`` on it."""
    return (
        f"providers: [{{name: fake, type: openai, base_url: '{fake_url}/v1', "
        f"api_key: {API_KEY}}}]\n"
        "models: [{name: m, deployments: [{provider: fake, model: gpt-4o-mini}]}]\n"
    )


def mock_config(model: str = "x") -> str:
    """The built-in mock provider, and model ``m`` on it (answering as ``model``)."""
    return (
        "providers: [{name: mock, type: mock}]\n"
        f"models: [{{name: m, deployments: [{{provider: mock, model: {model}}}]}}]\n"
    )


def serve_env(tmp: Path, env: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """This environment less CONDUIT_* and OTEL_*, with the local store under ``tmp/data``
    and the test master key; then ``env`` (a value of None unsets the variable)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CONDUIT_", "OTEL_"))}
    clean.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the supervisor makes one unless given
    clean.update(
        CONDUIT_DATA_DIR=str(tmp / "data"),
        CONDUIT_MASTER_KEY=MASTER_KEY,
        CONDUIT_LOG_LEVEL="INFO",
    )
    for name, value in (env or {}).items():
        if value is None:
            clean.pop(name, None)
        else:
            clean[name] = value
    return clean


async def serve_fails(
    tmp: Path, *args: str, env: Mapping[str, str | None] | None = None
) -> subprocess.CompletedProcess[str]:
    """``serve`` expected to exit at start-up (within 60 s): its status and stderr."""
    process = await asyncio.create_subprocess_exec(
        *COMMAND,
        "--port",
        "0",
        *args,
        cwd=ROOT,
        env=serve_env(tmp, env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:  # it served instead, or hung
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return subprocess.CompletedProcess(
        [*COMMAND, *args], process.returncode, out.decode(), err.decode()
    )


class Served:
    """``await Served.start(tmp_path, "--workers", "2", fake_url=fake.url)``; ``lines``
    holds everything it has written to stderr so far."""

    def __init__(self, process: asyncio.subprocess.Process, supervised: bool, data: Path) -> None:
        self.process = process
        self.supervised = supervised  # ready once the supervisor says all workers are
        self.data_dir = data
        self.lines: list[str] = []
        self.url = ""
        self.pids: list[int] = []
        self._reader: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @classmethod
    async def start(
        cls,
        tmp: Path,
        *args: str,
        fake_url: str | None = None,
        config: str | None = None,
        env: Mapping[str, str | None] | None = None,
    ) -> Served:
        """Started on a free port, once it says it listens (all its workers, with
        ``--workers``). ``config``: the config file's text; by default the fake provider's
        when ``fake_url`` is given, else no config file. ``env`` as for ``serve_env``."""
        if config is None and fake_url is not None:
            config = fake_config(fake_url)
        if config is not None:
            path = tmp / "providers.yaml"  # instances started side by side share the text
            path.write_text(config)
            args = ("--config", str(path), *args)
        environment = serve_env(tmp, env)
        process = await asyncio.create_subprocess_exec(
            *COMMAND,
            "--port",
            "0",
            *args,
            cwd=ROOT,
            env=environment,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        at = args.index("--workers") if "--workers" in args else -1
        served = cls(
            process, at >= 0 and args[at + 1] != "1", Path(environment["CONDUIT_DATA_DIR"])
        )
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
        """SIGTERM, then the exit status once it and its output have ended."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), within)
        finally:
            await self.kill()

    async def kill(self) -> int:
        """SIGKILL (no shutdown at all), then the exit status once its output has ended."""
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        if self._reader is not None:
            await self._reader
        assert self.process.returncode is not None
        return self.process.returncode


async def rpm_is_exact_across(instances: list[Served]) -> None:
    """A key with rpm 50 made on the first instance, then 200 requests at once spread over
    them all: exactly 50 pass, and each instance served some (one shared count)."""
    async with AdminClient(instances[0].url, MASTER_KEY) as admin:
        key = (await admin.create_key(name="shared", rpm=50))["key"]
    await clear_of_minute_end(15)  # these processes keep real time: one burst, one minute
    limits = httpx2.Limits(max_connections=200)
    async with httpx2.AsyncClient(timeout=60, limits=limits) as http:
        responses = await asyncio.gather(
            *(
                http.post(
                    instances[i % len(instances)].url + "/v1/chat/completions",
                    json={"model": "m", "messages": [{"role": "user", "content": "Say hello"}]},
                    headers={"Authorization": f"Bearer {key}"},
                )
                for i in range(200)
            )
        )
    assert Counter(r.status_code for r in responses) == {200: 50, 429: 150}
    served = Counter(i % len(instances) for i, r in enumerate(responses) if r.status_code == 200)
    assert len(served) == len(instances)  # each served some
