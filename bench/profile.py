"""Where the gateway's CPU goes on the hot path: the bench stack (bench/run.py's Stack)
under wrk load, sampled by py-spy, summarised as the top functions by own time and by
inclusive time, as a share of all samples.

    .venv/bin/python bench/profile.py [--stream] [--connections 32] [--seconds 8] [--top 25]

Needs py-spy on PATH (``pip install py-spy``); it is a profiler, not a dependency.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path


def summarise(collapsed: str, top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";")]
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"{total:,} samples", "", "own time:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines += ["", "inclusive time:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    # py-spy frames read "function (path/to/module.py:line)"; keep the module's tail.
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    tail = "/".join(Path(path).parts[-2:])
    return f"{name} ({tail})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--stream", action="store_true", help="profile 20-chunk streams")
    parser.add_argument("--plain", action="store_true", help="use the key without limits")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if not shutil.which("py-spy"):
        print("py-spy is not on PATH: pip install py-spy", file=sys.stderr)
        return 2
    sys.path.insert(0, os.path.dirname(__file__))
    from run import CHAT, STREAM, Stack, load

    with Stack() as stack:
        key = stack.plain if args.plain else stack.limited
        body = STREAM if args.stream else CHAT
        load(stack.through, body, key, 8, 2)  # warm up
        out = Path(os.environ.get("PROFILE_RAW") or Path(tempfile.mkdtemp()) / "profile.txt")
        loader = threading.Thread(
            target=load, args=(stack.through, body, key, args.connections, args.seconds + 2)
        )
        loader.start()
        subprocess.run(
            [
                "py-spy",
                "record",
                "--pid",
                str(stack.gateway.pid),
                "--format",
                "raw",
                "--rate",
                "1000",
                "--duration",
                str(args.seconds),
                "--nonblocking",
                "-o",
                str(out),
            ],
            check=True,
            capture_output=True,
        )
        loader.join()
        print(summarise(out.read_text(), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
