"""The server-side floor: a trivial Tornado handler (fixed JSON, no upstream call) on one
core under wrk. Whatever the gateway does costs at least this per request, so it says
how far tuning our own code can go before the HTTP server layer itself must change.

    .venv/bin/python bench/floor.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

ANSWER = b'{"id":"x","object":"chat.completion","choices":[]}'


def serve(port: int, loop: str) -> None:
    import tornado.httpserver
    import tornado.web

    class Fixed(tornado.web.RequestHandler):
        def post(self) -> None:
            self.set_header("Content-Type", "application/json")
            self.finish(ANSWER)

    async def main() -> None:
        server = tornado.httpserver.HTTPServer(
            tornado.web.Application([(r"/v1/chat/completions", Fixed)])
        )
        server.listen(port, "127.0.0.1")
        await asyncio.Event().wait()

    if loop == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def measure(seconds: int) -> None:
    from run import free_port, pinned, wrk

    for loop in ("asyncio", "uvloop"):
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(port), loop], preexec_fn=pinned(0)
        )
        time.sleep(1.5)
        run = wrk(f"http://127.0.0.1:{port}/v1/chat/completions", '{"model":"x"}', "x", 32, seconds)
        print(
            f"tornado trivial handler, {loop}: {run.rps:,.0f} req/s, {1000 / run.rps:.3f} ms per request at 100% of one core"
        )
        server.terminate()
        server.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "LOOP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), args.serve[1])
    else:
        sys.path.insert(0, os.path.dirname(__file__))
        measure(args.seconds)
