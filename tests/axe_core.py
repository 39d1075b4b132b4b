"""axe-core for the web UI's accessibility test: the pinned npm tarball, fetched once with
`npm pack` into .cache/axe-core and checked against its sha256 (never committed).

`python -m tests.axe_core` fetches it (scripts/test does); the test skips, saying why, when
it is absent and cannot be fetched.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "axe-core"
VERSION = "4.10.3"
SHA256 = "880970c081707360e64f34cea25ff91892f5bc95675b0776925b9709dd8a68bb"  # axe.min.js
CACHE = Path(
    os.environ.get("CONDUIT_AXE_DIR", Path(__file__).resolve().parent.parent / ".cache" / "axe")
)


class ProvisionError(RuntimeError):
    pass


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def axe_script(fetch: bool = True) -> Path:
    """The verified axe.min.js, fetched once if ``fetch``; ProvisionError says why not."""
    script = CACHE / VERSION / "axe.min.js"
    if script.exists() and _sha256(script) == SHA256:
        return script
    npm = shutil.which("npm")
    if not fetch or npm is None:
        raise ProvisionError(
            f"{PACKAGE}@{VERSION} is not in {CACHE} and npm is not available to fetch it "
            "(run scripts/test, or `python -m tests.axe_core`, with npm installed)."
        )
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(
            [npm, "pack", f"{PACKAGE}@{VERSION}", "--silent"],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        tarballs = list(Path(tmp).glob("*.tgz"))
        if result.returncode != 0 or not tarballs:
            raise ProvisionError(
                f"npm pack {PACKAGE}@{VERSION} failed: {result.stderr.strip()[-500:]}"
            )
        with tarfile.open(tarballs[0]) as tar:
            extracted = tar.extractfile(tar.getmember("package/axe.min.js"))
            assert extracted is not None
            body = extracted.read()
    if hashlib.sha256(body).hexdigest() != SHA256:
        raise ProvisionError(
            f"{PACKAGE}@{VERSION}: axe.min.js sha256 does not match the pinned one"
        )
    script.parent.mkdir(parents=True, exist_ok=True)
    partial = script.with_suffix(".part")
    partial.write_bytes(body)
    partial.replace(script)
    return script


if __name__ == "__main__":
    print(axe_script())
