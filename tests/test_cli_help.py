"""The CLI says what it does: every option has help naming its unit, default and variable;
--version answers; `keys list` shows each key's status, spend and expiry."""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2
import pytest

from conduit_tornado import Gateway, key_table
from conduit_tornado.cli import _parser, main
from conduit_tornado.core.settings import DEFAULT_URL
from tests.conftest import MASTER_KEY, GatewayFactory

ROOT = Path(__file__).resolve().parent.parent


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found += _parsers(child)
    return found


def test_every_option_has_help() -> None:
    missing = [
        f"{p.prog} {'/'.join(a.option_strings) or a.dest}"
        for p in _parsers(_parser())
        for action in p._actions
        # A group of commands is described by each of its commands' help.
        for a in (
            action._choices_actions if isinstance(action, argparse._SubParsersAction) else [action]
        )
        if a.help is None
    ]
    assert missing == []


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["keys"], ["CONDUIT_URL", f"default {DEFAULT_URL}", "CONDUIT_MASTER_KEY"]),
        (
            ["keys", "create"],
            ["USD", "per minute", "per day", "in flight", "default: never", "ISO 8601"],
        ),
        (["keys", "revoke"], ["--delete", "instead of disabling"]),
        (["serve"], ["CONDUIT_PORT; default 5000", "CONDUIT_HOST", "CONDUIT_STORE"]),
    ],
)
def test_help_names_units_defaults_and_variables(
    argv: list[str], expected: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        main([*argv, "--help"])
    assert exit.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for phrase in expected:
        assert phrase in text, phrase


def test_help_never_shows_the_master_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CONDUIT_MASTER_KEY", "condt_master_secret_in_env")
    with pytest.raises(SystemExit):
        main(["keys", "--help"])
    assert "condt_master_secret_in_env" not in capsys.readouterr().out


def test_version_prints_and_exits_zero() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "conduit_tornado", "--version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    name, version = done.stdout.split()
    assert name == "conduit-tornado" and version[0].isdigit()


@pytest.mark.asyncio
async def test_keys_list_shows_status_spend_and_expiry(
    start_gateway: GatewayFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    gw: Gateway = await start_gateway()
    soon = datetime.now(UTC) + timedelta(seconds=2)
    later = datetime(2031, 1, 2, 3, 4, tzinfo=UTC)
    common = ("keys", "--url", gw.url, "--master-key", MASTER_KEY)

    async def cli(*argv: str) -> str:
        assert await asyncio.to_thread(main, [*common, *argv]) == 0
        return capsys.readouterr().out

    await cli(
        "create", "--name", "a-key-with-a-rather-long-name", "--expires-at", later.isoformat()
    )
    await cli("create", "--name", "short", "--max-budget", "2.5", "--budget-duration", "monthly")
    await cli("create", "--name", "soon", "--expires-at", soon.isoformat())
    listed = (await cli("list")).splitlines()[1:]
    ids = {line.split()[-1]: line.split()[0] for line in listed}  # name: id
    await cli("revoke", ids["short"])
    async with httpx2.AsyncClient(base_url=gw.url) as http:
        r = await http.post(
            f"/admin/v1/keys/{ids['a-key-with-a-rather-long-name']}/spend",
            json={"spend": 0.125},
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
        )
        assert r.status_code == 200, r.text
    await asyncio.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.1)

    lines = (await cli("list")).splitlines()
    header, rows = lines[0], {line.split()[-1]: line for line in lines[1:]}
    assert header.split() == ["id", "prefix", "status", "spend", "budget", "expires", "name"]
    # Aligned: every column starts at the same place on every line.
    for column in ("status", "spend", "budget", "expires", "name"):
        at = header.index(column)
        assert all(row[at - 1] == " " and row[at] != " " for row in rows.values()), column
    long_row = rows["a-key-with-a-rather-long-name"].split()
    assert long_row[2:7] == ["active", "$0.1250", "none", "2031-01-02", "03:04"]
    assert rows["short"].split()[2:6] == ["disabled", "$0.00", "$2.50", "monthly"]
    assert rows["soon"].split()[2] == "expired"
    assert rows["short"].split()[-2] == "never"  # expires column, before the name


def test_settings_doc_names_the_cli_variables() -> None:
    doc = (ROOT / "docs" / "settings.md").read_text()
    assert f"| `CONDUIT_URL` | `{DEFAULT_URL}` |" in doc


def test_a_budget_period_that_has_ended_shows_nothing_spent() -> None:
    created = datetime(2026, 1, 15, 9, 30, 0, 123456, tzinfo=UTC)
    key = {
        "enabled": True,
        "created_at": created.isoformat(),
        "period_start": (created + timedelta(days=1)).isoformat(timespec="milliseconds"),
        "budget_duration": "1d",
        "max_budget": 1.0,
        "spend": 0.75,
    }
    in_that_period = created + timedelta(days=1, hours=5)
    assert key_table.spend(key, in_that_period) == 0.75
    assert key_table.spend(key, created + timedelta(days=2, hours=1)) == 0.0
    total = {**key, "budget_duration": "total", "period_start": key["created_at"]}
    assert key_table.spend(total, created + timedelta(days=400)) == 0.75
