"""configurable-http-proxy for the JupyterHub test: the version pinned in tests/chp/
(package.json, and package-lock.json with every package's integrity hash), installed once
with `npm ci` into .cache/chp (never committed).

`python -m tests.chp` installs it (scripts/test does); the test skips, saying why, when it
is absent and cannot be installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.npm_pinned import ProvisionError

PINNED = Path(__file__).resolve().parent / "chp"
CACHE = Path(
    os.environ.get("CONDUIT_CHP_DIR", Path(__file__).resolve().parent.parent / ".cache" / "chp")
)


def _lock() -> bytes:
    return (PINNED / "package-lock.json").read_bytes()


def chp_command(fetch: bool = True) -> Path:
    """The configurable-http-proxy executable, installed once if ``fetch``."""
    binary = CACHE / "node_modules" / ".bin" / "configurable-http-proxy"
    installed = CACHE / "package-lock.json"
    if binary.exists() and installed.exists() and installed.read_bytes() == _lock():
        return binary
    npm = shutil.which("npm")
    if not fetch or npm is None or shutil.which("node") is None:
        raise ProvisionError(
            f"configurable-http-proxy is not in {CACHE} and node/npm are not available to "
            "install it (run scripts/test, or `python -m tests.chp`, with Node.js installed)."
        )
    CACHE.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(PINNED / name, CACHE / name)
    # npm ci installs exactly the lock file's versions and checks each one's integrity hash.
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--silent"],
        cwd=CACHE,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0 or not binary.exists():
        (CACHE / "package-lock.json").unlink(missing_ok=True)  # not installed: try again later
        raise ProvisionError(f"npm ci (configurable-http-proxy) failed: {result.stderr[-500:]}")
    return binary


if __name__ == "__main__":
    print(chp_command())
