"""One file out of a pinned npm package, fetched once with `npm pack` into a cache folder
and checked against its sha256 (never committed): jongodb's binary, axe-core's script."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path


class ProvisionError(RuntimeError):
    """A test tool is absent and cannot be fetched; says why (the tests skip or stop)."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pinned_file(
    package: str,
    version: str,
    member: str,
    sha256: str,
    target: Path,
    *,
    unavailable: str,
    fetch: bool = True,
    mode: int = 0o644,
) -> Path:
    """``target``, once it holds ``member`` of ``package@version`` with that sha256: as
    cached, or fetched now if ``fetch`` and npm is there (else ProvisionError(unavailable)).
    Written beside and renamed into place, so a partial fetch is never taken for one."""
    if target.exists() and sha256_of(target) == sha256:
        return target
    npm = shutil.which("npm")
    if not fetch or npm is None:
        raise ProvisionError(unavailable)
    partial = target.with_suffix(".part")
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(
            [npm, "pack", f"{package}@{version}", "--silent"],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        tarballs = list(Path(tmp).glob("*.tgz"))
        if result.returncode != 0 or not tarballs:
            raise ProvisionError(
                f"npm pack {package}@{version} failed: {result.stderr.strip()[-500:]}"
            )
        with tarfile.open(tarballs[0]) as tar:
            extracted = tar.extractfile(tar.getmember(f"package/{member}"))
            assert extracted is not None
            target.parent.mkdir(parents=True, exist_ok=True)
            with partial.open("wb") as out:
                shutil.copyfileobj(extracted, out)
    if sha256_of(partial) != sha256:
        partial.unlink()
        raise ProvisionError(f"{package}@{version}: {member} sha256 does not match the pinned one")
    partial.chmod(mode)
    partial.replace(target)
    return target
