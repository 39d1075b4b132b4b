"""`conduit-tornado keys create|list|revoke` against a running gateway."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import httpx2
import pytest

from conduit_tornado import Gateway
from conduit_tornado.cli import main
from tests.conftest import MASTER_KEY, GatewayFactory, free_port

pytestmark = pytest.mark.asyncio


async def _cli(*argv: str) -> int:
    # The CLI runs its own event loop, so it runs in a thread beside the test's loop.
    return await asyncio.to_thread(main, list(argv))


async def test_keys_create_list_revoke(
    start_gateway: GatewayFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    gw: Gateway = await start_gateway()
    common = ("keys", "--url", gw.url, "--master-key", MASTER_KEY)
    assert (
        await _cli(
            *common, "create", "--name", "cli-key", "--models", "gpt-*, claude", "--rpm", "30"
        )
        == 0
    )
    out, err = capsys.readouterr()
    created = json.loads(out)
    assert created["name"] == "cli-key" and created["allowed_models"] == ["gpt-*", "claude"]
    assert created["rpm"] == 30 and created["key"].startswith("condt_")
    assert "not shown again" in err

    assert await _cli(*common, "list") == 0
    listing, _ = capsys.readouterr()
    assert (
        created["id"] in listing and created["prefix"] in listing and created["key"] not in listing
    )

    assert await _cli(*common, "revoke", created["id"]) == 0
    capsys.readouterr()
    async with httpx2.AsyncClient(base_url=gw.url) as http:
        r = await http.get("/v1/models", headers={"Authorization": f"Bearer {created['key']}"})
    assert r.status_code == 401

    assert await _cli(*common, "list", "--json") == 0
    assert json.loads(capsys.readouterr()[0])[0]["enabled"] is False
    assert await _cli(*common, "revoke", created["id"], "--delete") == 0
    capsys.readouterr()
    assert await _cli(*common, "revoke", created["id"]) == 1
    assert "No key" in capsys.readouterr()[1]


async def test_cli_errors_are_clear(
    start_gateway: GatewayFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = await start_gateway()
    assert await _cli("keys", "--url", gw.url, "--master-key", "wrong", "list") == 1
    assert "master key" in capsys.readouterr()[1]
    assert await _cli("keys", "--url", "http://127.0.0.1:9", "--master-key", "x", "list") == 1
    assert "cannot reach" in capsys.readouterr()[1]


async def test_serve_without_its_store_exits_with_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens here once this socket is closed
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUIT_")}
    env.update(CONDUIT_MONGODB_URI=f"mongodb://127.0.0.1:{closed}/", CONDUIT_MONGODB_TIMEOUT="0.5")
    started = time.monotonic()
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "conduit_tornado", "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: cannot reach the store at start-up: MongoDB:")
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 20  # the store timeout, not the driver's 30 s
