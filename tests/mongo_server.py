"""The test database: a real mongod when CONDUIT_TEST_MONGODB_URI is set, else jongodb.

jongodb is a MongoDB wire-protocol server shipped as a native binary inside an npm
package. We fetch the pinned tarball with `npm pack`, check the binary's sha256, and run
it on a free port for the test session. See DESIGN.md for what it gets right and wrong.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

PACKAGE = "@jongodb/memory-server-bin-linux-x64-gnu"
VERSION = "0.1.6"
SHA256 = "c53888f078d7f5f38d5386685044cf54dd94aaf831ebc09c76f1d4fbc321b625"
CACHE = Path(
    os.environ.get(
        "CONDUIT_JONGODB_DIR", Path(__file__).resolve().parent.parent / ".cache" / "jongodb"
    )
)


class ProvisionError(RuntimeError):
    pass


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def jongodb_binary() -> Path:
    """Return the verified binary, fetching it once into the cache folder."""
    binary = CACHE / VERSION / "jongodb"
    if binary.exists() and _sha256(binary) == SHA256:
        return binary
    npm = shutil.which("npm")
    if npm is None:
        raise ProvisionError(
            "No test MongoDB: set CONDUIT_TEST_MONGODB_URI to a mongod, or install npm so the "
            f"tests can fetch {PACKAGE}@{VERSION}."
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
            member = tar.getmember("package/bin/jongodb")
            extracted = tar.extractfile(member)
            assert extracted is not None
            binary.parent.mkdir(parents=True, exist_ok=True)
            partial = binary.with_suffix(".part")
            partial.write_bytes(extracted.read())
    if _sha256(partial) != SHA256:
        partial.unlink()
        raise ProvisionError(f"{PACKAGE}@{VERSION}: binary sha256 does not match the pinned one")
    partial.chmod(0o755)
    partial.replace(binary)
    return binary


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
