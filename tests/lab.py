"""Real JupyterLab on loopback as a process beside the test (the browser tests' one way to
start it): the test's own settings and home, none of the test process's CONDUIT_*."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx2


@contextlib.contextmanager
def jupyterlab(
    port: int,
    token: str,
    root: Path,
    env: Mapping[str, str],
    *args: str,
    ready: str | None = None,
    within: float = 60,
) -> Iterator[None]:
    """Until the server answers 200 at ``ready`` (a path with its query; by default its
    status API with the token); on the way out SIGINT, as a person's Ctrl-C, and a kill if
    it has not ended in 10 s."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONDUIT_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            f"--port={port}",
            "--ip=127.0.0.1",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            *args,
        ],
        env={**clean, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ready = ready or f"/api/status?token={token}"
        _until_ready(process, f"http://127.0.0.1:{port}{ready}", within)
        yield
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _until_ready(process: subprocess.Popen[bytes], url: str, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert process.poll() is None, f"JupyterLab exited with status {process.returncode}"
        try:
            if httpx2.get(url).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"JupyterLab did not answer {url} within {within} s")
