"""Instructions the gateway executes per request, counted by valgrind's callgrind: nearly
the same count run after run, where timed runs on this machine drift by up to 40%. Not
wholly load independent: the gateway's timers that fire during the measured seconds are
counted too, and the slower the machine, the more of them fall on each request (1-3% with
other work running): compare trees in alternating runs minutes apart at most.

    .venv/bin/python bench/instructions.py [--stream] [--responses] [--plain] [--requests 300]

The bench stack (bench/run.py's Stack) with the gateway under callgrind, instrumentation
off until 50 warm-up requests are done; then sequential requests on one connection. Only
user-space instructions count (system calls do not: use strace -c for those), and the
background work of the measured seconds (log flushes, settlement batches) is included.
Needs valgrind (Debian's package).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stream", action="store_true", help="20-chunk streams, not chat")
    parser.add_argument("--plain", action="store_true", help="the key without limits")
    parser.add_argument(
        "--responses", action="store_true", help="POST /v1/responses (translated to chat)"
    )
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        print("valgrind is not on PATH (apt-get install valgrind)", file=sys.stderr)
        return 2
    sys.path.insert(0, os.path.dirname(__file__))
    from run import CHAT, RESPONSES, RESPONSES_STREAM, STREAM, Stack

    out = Path(tempfile.mkdtemp()) / "callgrind.out"
    wrapper = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    if args.responses:
        body = RESPONSES_STREAM if args.stream else RESPONSES
    else:
        body = STREAM if args.stream else CHAT
    with Stack(wrapper=wrapper) as stack:
        url = stack.url + "/v1/responses" if args.responses else stack.through
        key = stack.plain if args.plain else stack.limited
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        with httpx2.Client(timeout=stack.timeout) as http:

            def send(count: int) -> None:
                for _ in range(count):
                    answer = http.post(url, content=body, headers=headers)
                    assert answer.status_code == 200, answer.text

            send(50)
            time.sleep(1.5)  # let the warm-up's background work finish uninstrumented
            pid = str(stack.gateway.pid)
            subprocess.run(["callgrind_control", "-i", "on", pid], check=True, capture_output=True)
            send(args.requests)
            time.sleep(1.5)  # and count what these requests left behind
            subprocess.run(["callgrind_control", "-i", "off", pid], check=True, capture_output=True)
    total = next(
        int(line.split()[1]) for line in out.read_text().splitlines() if line.startswith("totals:")
    )
    kind = "stream" if args.stream else "request"
    kind = ("Responses " if args.responses else "chat ") + kind
    print(f"{total / args.requests:,.0f} instructions per {kind} ({args.requests} measured)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
