"""What users install: the wheel enables the Jupyter extension; Jupyter sees it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_carries_the_jupyter_config(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("conduit_tornado-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert any(
        n.endswith("data/etc/jupyter/jupyter_server_config.d/conduit_jupyter.json") for n in names
    )
    assert "conduit_jupyter/extension.py" in names and "conduit_tornado/data/prices.json" in names


def test_jupyter_lists_the_extension() -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "jupyter_server.extension.serverextension", "list"],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    )
    text = listed.stdout + listed.stderr
    assert "conduit_jupyter" in text and "enabled" in text.split("conduit_jupyter", 1)[1][:40]
