"""`conduit-tornado export` / `import`: a gateway's state moved between stores, keys intact."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import httpx2
import pytest

from conduit_tornado import AdminClient, Gateway, Settings
from conduit_tornado.cli import main
from conduit_tornado.store import MongoStore
from conduit_tornado.transfer import FORMAT, VERSION

pytestmark = pytest.mark.asyncio
HI = [{"role": "user", "content": "Say hello"}]


async def _cli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def _chat(url: str, key: str) -> int:
    async with httpx2.AsyncClient(base_url=url) as http:
        r = await http.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": HI},
            headers={"Authorization": f"Bearer {key}"},
        )
    return r.status_code


async def _provision(gw: Gateway, master: str) -> tuple[dict[str, str], str]:
    async with AdminClient(gw.url, master) as admin:
        await admin.create_provider(name="up", type="mock", api_key="sk-moves-along")
        await admin.create_model(name="m", deployments=[{"provider": "up", "model": "x"}])
        created = await admin.create_key(name="mover", rpm=100)
    assert await _chat(gw.url, created["key"]) == 200
    return created, master


async def _state(gw: Gateway, master: str, key_id: str) -> tuple[str, int, int, int]:
    assert gw.ctx is not None
    provider = gw.ctx.catalog.providers["up"]
    assert provider.credential_error is None
    async with AdminClient(gw.url, master) as admin:
        logs = await admin.logs(key_id=key_id)
        usage = await admin.usage(key_id=key_id)
        key = await admin.get_key(key_id)
    requests = sum(row["requests"] for row in usage["data"])
    return str(provider.api_key), logs["total"], requests, int(key["rpm"])


async def test_local_to_mongodb_and_back_with_keys_intact(
    tmp_path: Path, mongo_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = Settings(host="127.0.0.1", port=0, data_dir=tmp_path / "one")
    source = Gateway(local)
    await source.start()
    master = source.generated_master_key
    assert master is not None
    created, _ = await _provision(source, master)
    await source.stop()

    dump = tmp_path / "state.jsonl"
    monkeypatch.setenv("CONDUIT_DATA_DIR", str(tmp_path / "one"))
    assert await _cli("export", str(dump), "--logs") == 0
    assert dump.stat().st_mode & 0o777 == 0o600  # it holds provider credentials in clear
    lines = [json.loads(line) for line in dump.read_text().splitlines()]
    assert lines[0] == {"format": FORMAT, "version": VERSION, "source": "local"}
    assert lines[-1]["end"] is True and lines[-1]["counts"]["keys"] == 1
    stored_key = next(line["d"] for line in lines if line.get("c") == "keys")
    assert "hash" in stored_key and created["key"] not in dump.read_text()  # hashes only

    database = "t_import_" + os.urandom(4).hex()
    monkeypatch.setenv("CONDUIT_MONGODB_URI", mongo_uri)
    monkeypatch.setenv("CONDUIT_MONGODB_DATABASE", database)
    monkeypatch.setenv("CONDUIT_SECRET_KEY", "the-target-secret")
    assert await _cli("import", str(dump)) == 0
    assert await _cli("import", str(dump)) == 0  # again: everything is there, nothing doubles

    target = Gateway(
        Settings(host="127.0.0.1", port=0, secret_key="the-target-secret"),
        store=MongoStore(mongo_uri, database),
    )
    await target.start()
    try:
        assert target.generated_master_key is None  # the master key came along (its hash)
        assert await _state(target, master, created["id"]) == ("sk-moves-along", 1, 1, 100)
        assert await _chat(target.url, created["key"]) == 200  # the same key works there
    finally:
        await target.stop()

    # And back: MongoDB to a new local file, whose own generated secret seals the credentials.
    back = tmp_path / "back.jsonl"
    assert await _cli("export", str(back)) == 0  # without logs this time
    monkeypatch.delenv("CONDUIT_MONGODB_URI")
    monkeypatch.delenv("CONDUIT_SECRET_KEY")
    monkeypatch.setenv("CONDUIT_DATA_DIR", str(tmp_path / "two"))
    assert await _cli("import", str(back)) == 0
    again = Gateway(Settings(host="127.0.0.1", port=0, data_dir=tmp_path / "two"))
    await again.start()
    try:
        # Two requests by now (one on each store); the logs were left out this time.
        assert await _state(again, master, created["id"]) == ("sk-moves-along", 0, 2, 100)
        assert await _chat(again.url, created["key"]) == 200
    finally:
        await again.stop()


async def test_a_damaged_file_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CONDUIT_DATA_DIR", str(tmp_path / "src"))
    source = Gateway(Settings(host="127.0.0.1", port=0, master_key="condt_master_" + "s" * 30))
    await source.start()
    async with AdminClient(source.url, "condt_master_" + "s" * 30) as admin:
        for n in range(3):
            await admin.create_key(name=f"k{n}")
    await source.stop()
    dump = tmp_path / "state.jsonl"
    assert await _cli("export", str(dump)) == 0
    capsys.readouterr()
    lines = dump.read_text().splitlines()

    monkeypatch.setenv("CONDUIT_DATA_DIR", str(tmp_path / "dst"))
    truncated = tmp_path / "truncated.jsonl"
    truncated.write_text("\n".join(lines[:-2]) + "\n")
    assert await _cli("import", str(truncated)) == 1
    assert "ends early" in capsys.readouterr().err
    newer = tmp_path / "newer.jsonl"
    newer.write_text("\n".join([json.dumps({"format": FORMAT, "version": 99}), *lines[1:]]))
    assert await _cli("import", str(newer)) == 1
    assert "version 99" in capsys.readouterr().err
    assert not (tmp_path / "dst").exists()  # refused before the target was even opened

    assert await _cli("import", str(dump)) == 0
    assert "imported 3 keys into the local file" in capsys.readouterr().err
    target = Gateway(Settings(host="127.0.0.1", port=0, master_key="condt_master_" + "t" * 30))
    await target.start()
    try:
        async with AdminClient(target.url, "condt_master_" + "t" * 30) as admin:
            names = sorted(k["name"] for k in (await admin.list_keys())["data"])
        assert names == ["k0", "k1", "k2"]
    finally:
        await target.stop()
