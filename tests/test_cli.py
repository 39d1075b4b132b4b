"""`conduit-tornado keys create|list|revoke` against a running gateway."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import httpx2
import pytest

from conduit_tornado import Gateway, Settings
from conduit_tornado.cli import main
from tests.conftest import MASTER_KEY, GatewayFactory
from tests.served import Served, serve_fails

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
            *common, "create", "--name", "cli-key", "--models", "gpt-*, claude-*", "--rpm", "30"
        )
        == 0
    )
    out, err = capsys.readouterr()
    created = json.loads(out)
    assert created["name"] == "cli-key" and created["allowed_models"] == ["gpt-*", "claude-*"]
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


async def test_serve_without_its_store_exits_with_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens here once this socket is closed
    env = {
        "CONDUIT_MONGODB_URI": f"mongodb://127.0.0.1:{closed}/",
        "CONDUIT_MONGODB_TIMEOUT": "0.5",
    }
    started = time.monotonic()
    done = await serve_fails(tmp_path, env=env)
    assert done.returncode == 1
    assert done.stderr.startswith("error: cannot reach the store at start-up: MongoDB:")
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 20  # the store timeout, not the driver's 30 s


async def test_admin_reset_master_key_replaces_the_stored_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(host="127.0.0.1", port=0, data_dir=tmp_path)
    first = Gateway(settings)
    await first.start()
    old = first.generated_master_key
    assert old is not None
    await first.stop()

    monkeypatch.setenv("CONDUIT_DATA_DIR", str(tmp_path))
    assert await _cli("admin", "reset-master-key") == 0
    out, err = capsys.readouterr()
    new = out.strip()
    assert new.startswith("condt_master_") and new != old
    assert f"local file {tmp_path}" in err and "Running gateways on this store take it up" in err

    again = Gateway(settings)
    await again.start()
    try:
        assert again.generated_master_key is None  # the reset one is kept, none generated
        async with httpx2.AsyncClient(base_url=again.url) as http:
            for key, status in ((old, 401), (new, 200)):
                r = await http.get("/admin/v1/keys", headers={"Authorization": f"Bearer {key}"})
                assert r.status_code == status
    finally:
        await again.stop()


async def test_serve_says_which_store_it_uses(tmp_path: Path) -> None:
    for extra, expected in (
        ((), f"(store: local file {tmp_path / 'conduit.sqlite3'})"),
        (("--store", "memory"), "(store: memory (not persisted))"),
    ):
        served = await Served.start(tmp_path, *extra, env={"CONDUIT_DATA_DIR": str(tmp_path)})
        await served.stop()
        assert expected in next(line for line in served.lines if "listening on" in line)
