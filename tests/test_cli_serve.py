"""`conduit-tornado serve` as an operator meets it: a port it cannot have is one clear line
and a non-zero exit, the start-up line says where the web UI is, the last line says it
stopped; GET / points browsers to the UI and API clients to the API."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from tests.conftest import MASTER_KEY, GatewayFactory
from tests.served import READY

pytestmark = pytest.mark.asyncio
ROOT = Path(__file__).resolve().parent.parent


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUIT_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(CONDUIT_DATA_DIR=str(tmp / "data"), **extra)
    return env


async def _serve(
    tmp: Path, *args: str, prefix: list[str] | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    argv = [*(prefix or []), sys.executable, "-m", "conduit_tornado", "serve", *args]
    return await asyncio.to_thread(
        subprocess.run,
        argv,
        cwd=ROOT,
        env=_env(tmp, **env),
        capture_output=True,
        text=True,
        timeout=90,
    )


def _anyone_may_listen_on(port: int) -> bool:
    unprivileged = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")  # Linux
    return unprivileged.exists() and int(unprivileged.read_text()) <= port


def _refused(done: subprocess.CompletedProcess[str], tmp: Path, line: str) -> None:
    """Exactly the one line on stderr, a non-zero status, and nothing started: the
    store was never opened (no data directory, no master key generated and printed)."""
    assert done.returncode == 1, done.stderr
    assert done.stderr == f"error: {line}\n"
    assert not (tmp / "data").exists()


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_a_port_in_use_is_one_clear_line(tmp_path: Path, workers: str) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = await _serve(tmp_path, "--port", str(port), "--workers", workers)
    _refused(
        done,
        tmp_path,
        f"port {port} on 127.0.0.1 is already in use; choose another with --port or "
        "CONDUIT_PORT (or stop the program holding it)",
    )


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"CONDUIT_PORT": "http"}, "CONDUIT_PORT: must be a whole number"),
        ({"CONDUIT_WORKERS": "-3"}, "CONDUIT_WORKERS: must be at least 1"),
    ],
)
async def test_a_bad_setting_is_one_line_naming_its_variable(
    tmp_path: Path, env: dict[str, str], line: str
) -> None:
    done = await _serve(tmp_path, **env)
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"error: {line}\n"
    assert not (tmp_path / "data").exists()


async def test_a_metrics_port_in_use_names_its_setting(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        argv = [sys.executable, "-m", "conduit_tornado", "serve", "--port", "0"]
        done = await asyncio.to_thread(
            subprocess.run,
            argv,
            cwd=ROOT,
            env=_env(tmp_path, CONDUIT_METRICS_PORT=str(port)),
            capture_output=True,
            text=True,
            timeout=90,
        )
    # Bound before the store is opened: no master key generated and never shown.
    _refused(
        done,
        tmp_path,
        f"port {port} on 127.0.0.1 is already in use; choose another with "
        "CONDUIT_METRICS_PORT (or stop the program holding it)",
    )


async def test_a_privileged_port_is_one_clear_line(tmp_path: Path) -> None:
    prefix: list[str] = []
    if os.geteuid() == 0:  # root may bind port 80: run without that capability
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv to drop CAP_NET_BIND_SERVICE")
        prefix = [setpriv, "--bounding-set=-net_bind_service", "--inh-caps=-net_bind_service"]
    if _anyone_may_listen_on(80):
        pytest.skip("this machine lets anyone listen on port 80")
    done = await _serve(tmp_path, "--port", "80", prefix=prefix)
    _refused(
        done,
        tmp_path,
        "no permission to listen on port 80 on 127.0.0.1 (ports below 1024 need "
        "administrator rights); choose another with --port or CONDUIT_PORT",
    )


@pytest.mark.parametrize(
    ("host", "line"),
    [
        (  # TEST-NET-3 (RFC 5737): never an address of this machine
            "203.0.113.7",
            "cannot listen on 203.0.113.7: it is not an address of this machine; set --host "
            "or CONDUIT_HOST to one of its addresses (0.0.0.0 for all of them)",
        ),
        (
            "no-such-host.invalid",
            "cannot listen on host 'no-such-host.invalid': ",
        ),
    ],
)
async def test_a_host_not_of_this_machine_is_one_clear_line(
    tmp_path: Path, host: str, line: str
) -> None:
    done = await _serve(tmp_path, "--host", host, "--port", "0")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: {line}") and done.stderr.count("\n") == 1
    assert "set --host or CONDUIT_HOST" in done.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_serve_names_the_web_ui_and_says_when_it_stopped(
    tmp_path: Path, workers: str
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "conduit_tornado",
        "serve",
        "--port",
        "0",
        "--workers",
        workers,
        cwd=ROOT,
        env=_env(tmp_path, CONDUIT_MASTER_KEY=MASTER_KEY, CONDUIT_BASE_PATH="/gw"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        while True:
            line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
            assert line, "serve exited before listening"
            # Each worker says it listens too ("worker N listening on"): wait for all.
            if line.find("conduit-tornado listening on") >= 0 and (match := READY.search(line)):
                break
        url = match.group(1)
        assert url.endswith("/gw")
        assert f"web UI at {url}/ui/" in line
        async with httpx2.AsyncClient() as http:
            page = await http.get(url + "/", headers={"Accept": "text/html,*/*;q=0.8"})
            assert page.status_code == 302 and page.headers["location"] == "/gw/ui/"
            ui = await http.get(url + "/ui/")
            assert ui.status_code == 200 and "text/html" in ui.headers["content-type"]
    finally:
        proc.send_signal(signal.SIGTERM)
        rest = (await asyncio.wait_for(proc.stderr.read(), 60)).decode()
        await proc.wait()
    assert proc.returncode == 0
    last = rest.splitlines()[-1]
    if workers == "1":
        assert last.endswith("conduit-tornado stopped"), rest
    else:  # the supervisor's, after each worker drained and said so
        assert last.endswith("conduit-tornado stopped (exit status 0)"), rest
        assert rest.count("worker stopped") == 2 and "killed" not in rest, rest


async def test_the_bare_address_answers_browsers_and_api_clients(
    start_gateway: GatewayFactory,
) -> None:
    gw = await start_gateway()
    async with httpx2.AsyncClient(base_url=gw.url) as http:
        browser = await http.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
        assert browser.status_code == 302 and browser.headers["location"] == "/ui/"
        assert browser.headers["vary"] == "Accept"
        for accept in ("application/json", "*/*"):
            r = await http.get("/", headers={"Accept": accept})
            assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
            body = r.json()
            assert body["name"] == "conduit-tornado" and body["version"]
            assert body["links"] == {
                "api": "/v1",
                "models": "/v1/models",
                "ui": "/ui/",
                "openapi": "/openapi.json",
                "health": "/health/ready",
            }
            for link in ("/openapi.json", "/health/ready", "/ui/"):  # each one answers
                assert (await http.get(link)).status_code == 200
        # Only GET: anything else is the API's 405 in its JSON envelope.
        post = await http.post("/", json={})
        assert post.status_code == 405 and "error" in post.json()
