"""The test database: a real mongod when CONDUIT_TEST_MONGODB_URI is set, else jongodb.

jongodb is a MongoDB wire-protocol server shipped as a native binary inside an npm
package. We fetch the pinned tarball with `npm pack`, check the binary's sha256, and run
it on a free port for the test session. See DESIGN.md for what it gets right and wrong.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.npm_pinned import ProvisionError, pinned_file

PACKAGE = "@jongodb/memory-server-bin-linux-x64-gnu"
VERSION = "0.1.6"
SHA256 = "c53888f078d7f5f38d5386685044cf54dd94aaf831ebc09c76f1d4fbc321b625"
CACHE = Path(
    os.environ.get(
        "CONDUIT_JONGODB_DIR", Path(__file__).resolve().parent.parent / ".cache" / "jongodb"
    )
)


def jongodb_binary() -> Path:
    """Return the verified binary, fetching it once into the cache folder."""
    return pinned_file(
        PACKAGE,
        VERSION,
        "bin/jongodb",
        SHA256,
        CACHE / VERSION / "jongodb",
        mode=0o755,
        unavailable=(
            "No test MongoDB: set CONDUIT_TEST_MONGODB_URI to a mongod, or install npm so the "
            f"tests can fetch {PACKAGE}@{VERSION}."
        ),
    )


class JongoServer:
    def __init__(self, binary: Path, port: int) -> None:
        self.port = port
        self.process = subprocess.Popen(
            [str(binary), "--host=127.0.0.1", f"--port={port}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if line.startswith("JONGODB_URI="):
                self.uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
                return
            if not line and self.process.poll() is not None:
                break
        self.stop()
        raise ProvisionError(f"jongodb did not start on port {port}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


if __name__ == "__main__":  # `python -m tests.mongo_server` provisions ahead of a run
    print(jongodb_binary())
