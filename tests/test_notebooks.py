"""The example notebooks run headless, top to bottom, with no network, and show what their
text promises: the outputs a reader sees are checked, not only the absence of errors."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

FOLDER = Path(__file__).resolve().parent.parent / "notebooks"
WIDGET = "application/vnd.jupyter.widget-view+json"

# notebook -> (patterns its printed text must match, number of widgets it displays)
EXPECTED: dict[str, tuple[list[str], int]] = {
    "quickstart": (
        [
            r"<conduit gateway at http://127\.0\.0\.1:\d+>",
            r"key_[0-9a-f]+ condt_\w+",
            r"\['my-gpt'\]",
            r"Mock reply: Hello, gateway! CompletionUsage\(completion_tokens=4",
            r"Mock reply: Stream, please",
        ],
        0,
    ),
    "key_management": ([r"store: memory", r"created: \['from-code'\]"], 1),
    "usage_analysis": (
        [
            r"alice: 7 requests, \d+ tokens, \$0\.\d+",
            r"bob: 3 requests, \d+ tokens, \$0\.\d+",
            r"large: \$0\.\d+",
            r"small: \$0\.\d+",
        ],
        1,
    ),
}


def test_every_notebook_is_checked() -> None:
    assert {p.stem for p in FOLDER.glob("*.ipynb")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_and_shows_its_results(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("CONDUIT_MONGODB_URI", "CONDUIT_MASTER_KEY", "CONDUIT_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    book = nbformat.read(FOLDER / f"{name}.ipynb", as_version=4)
    NotebookClient(
        book, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(FOLDER)}}
    ).execute()
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert [o for o in outputs if o.output_type == "error"] == []
    text = "".join(
        o.get("text", "") if o.output_type == "stream" else o.get("data", {}).get("text/plain", "")
        for o in outputs
    )
    patterns, widgets = EXPECTED[name]
    missing = [p for p in patterns if not re.search(p, text)]
    assert missing == [], text
    assert sum(WIDGET in o.get("data", {}) for o in outputs) == widgets
