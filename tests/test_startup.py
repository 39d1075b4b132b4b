"""Start-up with and without MongoDB, the master key, config files, health, shutdown."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import httpx2
import pytest

from conduit_tornado import AdminClient, Gateway, Settings
from conduit_tornado.config_file import ConfigError, load_config
from conduit_tornado.store import MongoStore
from tests.conftest import MASTER_KEY, GatewayFactory, free_port, new_mongo_store
from tests.mongo_server import JongoServer, jongodb_binary
from tests.served import Served

pytestmark = pytest.mark.asyncio


async def test_generated_master_key_survives_restart_on_mongodb(mongo_uri: str) -> None:
    database = "t_restart_" + os.urandom(4).hex()
    settings = Settings(host="127.0.0.1", port=0)
    first = Gateway(settings, store=MongoStore(mongo_uri, database))
    await first.start()
    key = first.generated_master_key
    assert key is not None and key.startswith("condt_master_")
    async with AdminClient(first.url, key) as admin:
        created = await admin.create_key(name="persisted")
    await first.stop()

    # A new process on the same database: the old master key still works, none is printed.
    again = Gateway(settings, store=MongoStore(mongo_uri, database))
    await again.start()
    try:
        assert again.generated_master_key is None
        async with AdminClient(again.url, key) as admin:
            assert (await admin.get_key(created["id"]))["name"] == "persisted"
        async with httpx2.AsyncClient(base_url=again.url) as http:
            ready = await http.get("/health/ready")
        assert ready.json() == {"status": "ok", "store": "mongodb"}
    finally:
        await again.stop()


async def test_memory_store_generates_a_key_each_start(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway(master_key=None)
    assert gw.generated_master_key is not None
    async with AdminClient(gw.url, gw.generated_master_key) as admin:
        assert (await admin.list_keys())["total"] == 0
    async with httpx2.AsyncClient(base_url=gw.url) as http:
        assert (await http.get("/health/ready")).json() == {"status": "ok", "store": "memory"}
        assert (await http.get("/health/live")).json() == {"status": "ok", "pid": os.getpid()}


async def test_ready_reports_a_lost_store(start_gateway: GatewayFactory) -> None:
    server = JongoServer(jongodb_binary(), free_port())
    try:
        gw = await start_gateway(store=new_mongo_store(server.uri))
        async with httpx2.AsyncClient(base_url=gw.url) as http:
            assert (await http.get("/health/ready")).status_code == 200
            server.stop()
            lost = await http.get("/health/ready")
            assert lost.status_code == 503 and lost.json()["error"]["code"] == "store_unavailable"
            assert (await http.get("/health/live")).status_code == 200
    finally:
        server.stop()


async def test_config_file_declares_providers_and_models(
    tmp_path: Path, start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_UPSTREAM_KEY", "sk-from-env-789")
    yaml_file = tmp_path / "gateway.yaml"
    yaml_file.write_text(
        """
providers:
  - name: upstream
    type: openai
    base_url: https://llm.example.test/v1
    api_key: ${TEST_UPSTREAM_KEY}
  - name: fake
    type: mock
models:
  - name: chat
    deployments:
      - {provider: upstream, model: gpt-4o, weight: 2}
      - {provider: fake, model: mock-1}
    strategy: round_robin
"""
    )
    gw = await start_gateway(config=yaml_file)
    assert gw.ctx is not None
    assert gw.ctx.catalog.providers["upstream"].api_key == "sk-from-env-789"
    assert gw.ctx.catalog.models["chat"].strategy == "round_robin"

    toml_file = tmp_path / "gateway.toml"
    toml_file.write_text(
        '[[providers]]\nname = "fake"\ntype = "mock"\n\n'
        '[[models]]\nname = "t"\ndeployments = [{provider = "fake", model = "m"}]\n'
    )
    gw2 = await start_gateway(config=toml_file)
    assert gw2.ctx is not None and list(gw2.ctx.catalog.models) == ["t"]

    # Applying the same file again (a restart on MongoDB) updates instead of failing.
    assert gw.ctx is not None
    await gw.ctx.catalog.apply(*load_config(yaml_file))
    assert len(gw.ctx.catalog.providers) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("providers: [{name: x, type: nope}]", "type"),
        (
            "providers: [{name: x, type: mock, api_key: '${UNSET_VAR_FOR_TEST}'}]",
            "UNSET_VAR_FOR_TEST",
        ),
        ("surprise: 1", "unknown sections"),
        ("providers: [", "not valid YAML"),
    ],
)
async def test_bad_config_files_fail_clearly(
    tmp_path: Path, start_gateway: GatewayFactory, text: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        await start_gateway(config=path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "models:\n  - {name: ok, deployments: [{provider: p, model: m}]}\n"
            "  - {name: bad, deployments: []}\n",
            "models[1].deployments: must list at least one deployment (the entry named 'bad')",
        ),
        (
            "providers:\n  - {name: p, type: mock}\n  - {name: q, type: azure}\n",
            "providers[1].base_url is required for azure providers (the entry named 'q')",
        ),
        (
            "providers:\n  - {name: p, type: mock, base_ur: x}\n",
            "providers[0].base_ur: is not a field this section takes (a misspelling?)",
        ),
        (
            "providers:\n  - {name: p, type: openai, api_key: '${UNSET_VAR_FOR_TEST}'}\n",
            "providers[0].api_key: the environment variable UNSET_VAR_FOR_TEST is not set",
        ),
    ],
)
async def test_config_file_problems_name_the_file_and_the_entry(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: {message}")
    assert "pydantic" not in str(info.value)


async def test_serve_command_prints_key_once_and_stops_gracefully(
    mongo_uri: str, tmp_path: Path
) -> None:
    database = "t_serve_" + os.urandom(4).hex()
    env = {
        "CONDUIT_MONGODB_URI": mongo_uri,
        "CONDUIT_MONGODB_DATABASE": database,
        "CONDUIT_MASTER_KEY": None,
    }

    async def run_once() -> str:
        """Its stderr, once started and stopped (SIGTERM) cleanly."""
        served = await Served.start(tmp_path, env=env)
        assert await served.stop() == 0, served.log()
        return served.log()

    first_err = await run_once()
    assert "Generated admin master key" in first_err
    key = next(
        line.strip() for line in first_err.splitlines() if line.strip().startswith("condt_master_")
    )
    assert first_err.count(key) == 1  # printed once, never logged again
    second_err = await run_once()
    assert "Generated admin master key" not in second_err and key not in second_err
    assert "shutting down" in second_err


async def test_unknown_master_key_is_refused(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway()
    async with AdminClient(gw.url, MASTER_KEY + "x") as admin:
        with pytest.raises(Exception, match="401"):
            await admin.list_keys()


async def test_instances_applying_one_config_at_once_all_start(tmp_path: Path, store: Any) -> None:
    """Several instances starting together on a fresh database with the same file: each
    sees no provider, the first create wins, the others update (no 409 at start)."""
    from conduit_tornado.core.clock import Clock
    from conduit_tornado.core.security import SecretBox
    from conduit_tornado.routing.catalog import Catalog

    config = tmp_path / "gateway.yaml"
    config.write_text(
        "providers: [{name: fake, type: mock}]\n"
        "models: [{name: chat, deployments: [{provider: fake, model: m}]}]\n"
    )
    providers, models = load_config(config)
    box = SecretBox("s" * 32)
    catalogs = [Catalog(store, box, Clock()) for _ in range(3)]
    await asyncio.gather(*(c.apply(providers, models) for c in catalogs))
    for catalog in catalogs:
        await catalog.refresh()
        assert list(catalog.providers) == ["fake"] and list(catalog.models) == ["chat"]
