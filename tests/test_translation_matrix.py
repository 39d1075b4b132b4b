"""The README's translation matrix is what the adapters do: every cell that says a
parameter is dropped is named by that provider type's ``dropped``, and every cell that
says passed or translated is not (issue 22: nothing silently lost)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from conduit_tornado.routing.providers import ADAPTERS

README = Path(__file__).resolve().parent.parent / "README.md"
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
#: A value a client would send for each parameter the table names.
SAMPLES: dict[str, Any] = {
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 10,
    "max_completion_tokens": 10,
    "temperature": 0.5,
    "top_p": 0.9,
    "n": 2,
    "stop": ["END"],
    "stream": True,
    "stream_options": {"include_usage": True},
    "tools": [TOOL],
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
    "reasoning_effort": "low",
    "seed": 1,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "logprobs": True,
    "top_logprobs": 2,
    "logit_bias": {"50256": -100},
    "user": "u-1",
    "metadata": {"team": "a"},
    "store": False,
    "service_tier": "auto",
    "modalities": ["text"],
    "audio": {"voice": "alloy", "format": "wav"},
    "prediction": {"type": "content", "content": "x"},
    "some_future_field": {"nested": True},
}


def _rows() -> list[tuple[list[str], dict[str, str]]]:
    text = README.read_text()
    table = text.split("<!-- translation-matrix -->")[1].split("<!-- /translation-matrix -->")[0]
    lines = [line for line in table.strip().splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        names = re.findall(r"`([a-z_]+)`", cells[0])
        if "any other" in cells[0]:
            names.append("some_future_field")
        rows.append((names, dict(zip(header[1:], cells[1:], strict=True))))
    return rows


ROWS = _rows()


def test_the_table_covers_every_sample_and_every_type() -> None:
    named = {name for names, _ in ROWS for name in names}
    assert named == set(SAMPLES)
    types = {"openai", "azure", "anthropic", "gemini", "mock"}
    assert {t for _, cells in ROWS for t in cells} == types
    assert all(t in ADAPTERS for t in types)


@pytest.mark.parametrize(("names", "cells"), ROWS, ids=[",".join(n) for n, _ in ROWS])
def test_each_cell_is_what_the_adapter_does(names: list[str], cells: dict[str, str]) -> None:
    for provider, cell in cells.items():
        verdict = cell.split(":")[0].split(";")[0].split()[0]
        # honoured: acted on where there is no provider to pass it to (the mock)
        assert verdict in ("passed", "translated", "honoured", "dropped", "refused"), cell
        for name in names:
            body = {"model": "m", "messages": SAMPLES["messages"], name: SAMPLES[name]}
            dropped = ADAPTERS[provider].dropped(body)
            if verdict == "dropped":
                assert name in dropped, f"{provider} keeps {name}, the README says dropped"
            else:
                assert name not in dropped, f"{provider} drops {name}, the README says {verdict}"
