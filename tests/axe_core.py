"""axe-core for the web UI's accessibility test: the pinned npm tarball, fetched once with
`npm pack` into .cache/axe-core and checked against its sha256 (never committed).

`python -m tests.axe_core` fetches it (scripts/test does); the test skips, saying why, when
it is absent and cannot be fetched.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.npm_pinned import pinned_file

PACKAGE = "axe-core"
VERSION = "4.10.3"
SHA256 = "880970c081707360e64f34cea25ff91892f5bc95675b0776925b9709dd8a68bb"  # axe.min.js
CACHE = Path(
    os.environ.get("CONDUIT_AXE_DIR", Path(__file__).resolve().parent.parent / ".cache" / "axe")
)


def axe_script(fetch: bool = True) -> Path:
    """The verified axe.min.js, fetched once if ``fetch``; ProvisionError says why not."""
    return pinned_file(
        PACKAGE,
        VERSION,
        "axe.min.js",
        SHA256,
        CACHE / VERSION / "axe.min.js",
        fetch=fetch,
        unavailable=(
            f"{PACKAGE}@{VERSION} is not in {CACHE} and npm is not available to fetch it "
            "(run scripts/test, or `python -m tests.axe_core`, with npm installed)."
        ),
    )


if __name__ == "__main__":
    print(axe_script())
