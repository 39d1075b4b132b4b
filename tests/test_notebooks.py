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
STILL_RUNNING = r"still running at http://127\.0\.0\.1:\d+ \(set CLEAN_UP = True"  # not cleaned up
EXPECTED: dict[str, tuple[list[str], int]] = {
    "quickstart": (
        [
            r"<conduit gateway at http://127\.0\.0\.1:\d+>",
            r"key_[0-9a-f]+ condt_[\w-]+",  # prefixes are url-safe base64: - too
            r"\['my-gpt'\]",
            r"Mock reply: Hello, gateway! CompletionUsage\(completion_tokens=4",
            r"Mock reply: Stream, please\n",
            r"refused: 404 The model 'other-model' does not exist",
            STILL_RUNNING,
        ],
        0,
    ),
    "key_management": (
        [
            r"store: memory",
            r"created: \['from-code'\]",
            r"search-team \| 600 req/min, 200k tok/min \| \$0\.00 of \$50\.00 monthly, resets \w{3} 1, \d{4}",
            r"refused: Requests per minute must be a positive whole number",
            STILL_RUNNING,
        ],
        1,
    ),
    "usage_analysis": (
        [
            r"alice: 7 requests, \d+ tokens, \$0\.\d+",
            r"bob: 3 requests, \d+ tokens, \$0\.\d+",
            r"large: \$0\.\d+",
            r"small: \$0\.\d+",
            r"large: \$0\.\d+ over 7 days",
            STILL_RUNNING,
        ],
        1,
    ),
    "playground_and_responses": (
        [
            r"answer: Mock reply: What is a gateway\?",
            # the Responses API where the gateway serves it, else the stated fallback
            r"Responses API: (Mock reply: Hello, Responses|not served by this gateway)",
            STILL_RUNNING,
        ],
        1,
    ),
    "jupyterhub": (
        [
            r"alice http://127\.0\.0\.1:\d+/v1 condt_",
            r"bob http://127\.0\.0\.1:\d+/v1 condt_",
            r"alice: refused after [1-9]\d* requests with 429",
            r"bob: still served: Mock reply",
            r"hub:alice \| \$1\.\d\d of \$1\.00 monthly",
            r"service conduit at http://127\.0\.0\.1:5055, served under /services/conduit/",
            r"roles: conduit-service \(list:users read:users\), user \(self access:services",
            r"pre_spawn_hook: hook",
            STILL_RUNNING,
        ],
        0,
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
