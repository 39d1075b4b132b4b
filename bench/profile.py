"""Where the gateway's CPU goes on the hot path: the bench stack (bench/run.py's Stack)
under wrk load, sampled by py-spy, summarised as the top functions by own time and by
inclusive time, as a share of all samples.

    .venv/bin/python bench/profile.py [--stream] [--responses] [--connections 32] [--seconds 8]
        [--top 25]

With the request count of the load, each function's samples are also given as µs of CPU
per request (py-spy counts samples of running threads at --rate per second), so two
routes profiled alike can be compared function by function (e.g. chat and --responses,
the same upstream work).

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


def summarise(collapsed: str, top: int, requests: int = 0, rate: int = 1000) -> str:
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

    def per_request(n: int) -> str:
        return f"{n * 1e6 / rate / requests:7.1f} µs/req  " if requests else ""

    head = f"{total:,} samples"
    if requests:
        head += f", {requests:,} requests: {per_request(total).strip()} sampled in all"
    lines = [head, "", "own time:"]
    lines += [f"  {100 * n / total:5.1f}%  {per_request(n)}{f}" for f, n in own.most_common(top)]
    lines += ["", "inclusive time:"]
    lines += [
        f"  {100 * n / total:5.1f}%  {per_request(n)}{f}" for f, n in inclusive.most_common(top)
    ]
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
    parser.add_argument(
        "--responses", action="store_true", help="POST /v1/responses (translated to chat)"
    )
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if not shutil.which("py-spy"):
        print("py-spy is not on PATH: pip install py-spy", file=sys.stderr)
        return 2
    sys.path.insert(0, os.path.dirname(__file__))
    from run import CHAT, RESPONSES, RESPONSES_STREAM, STREAM, Stack, load

    with Stack() as stack:
        key = stack.plain if args.plain else stack.limited
        if args.responses:
            url = stack.url + "/v1/responses"
            body = RESPONSES_STREAM if args.stream else RESPONSES
        else:
            url, body = stack.through, STREAM if args.stream else CHAT
        load(url, body, key, 8, 2)  # warm up
        out = Path(os.environ.get("PROFILE_RAW") or Path(tempfile.mkdtemp()) / "profile.txt")
        # The load runs longer than the sampling; requests are counted over the sampled
        # seconds at the load's mean rate.
        runs = []
        loader = threading.Thread(
            target=lambda: runs.append(load(url, body, key, args.connections, args.seconds + 2))
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
        requests = round(runs[0].rps * args.seconds) if runs else 0
        print(summarise(out.read_text(), args.top, requests))
    return 0


if __name__ == "__main__":
    sys.exit(main())
