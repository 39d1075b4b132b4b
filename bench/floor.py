"""The server-side floor: a trivial Tornado handler (fixed JSON, no upstream call) on one
core under wrk, served by Tornado's own HTTP server and by ours (conduit_tornado's
http_server), our server alone with a bare delegate instead of Tornado's Application
(``conduit-bare``), and a bare httptools protocol for reference. Whatever the gateway does costs
at least this per request, so it says how much of a request's CPU is the HTTP layer.

    .venv/bin/python bench/floor.py [--seconds 5]

What it showed (CPU per request of the server process, pinned to one core; req/s mean
little on a shared machine): as first recorded in server/http.py's docstring (this
2-core VM, date not kept), Tornado's own server ~0.27 ms, Tornado's server without a
RequestHandler ~0.16 ms, httptools on a bare protocol ~0.01 ms: most of a trivial request's CPU under Tornado's server is its HTTP layer, the
reason for server/http.py. 2026-12-06, with the connection limits of issue 16 (deadlines,
connection cap, bounded pipelining, Content-Length accounting), old and new trees run
alternately under the same load (load average 5-8 on 2 cores from other work, so only
roughly comparable): ``conduit-bare`` 0.049 -> 0.051 ms, ``conduit`` 0.11 -> 0.12 ms
(medians of 3-5 runs of 4 s, each spread +-25%), ``tornado`` 0.19-0.21 ms,
``httptools`` 0.012-0.019 ms. Rerun on a quiet machine before drawing finer conclusions.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from typing import Any

ANSWER = b'{"id":"x","object":"chat.completion","choices":[]}'
SERVERS = ("tornado", "conduit", "conduit-bare", "httptools")


def serve(port: int, kind: str) -> None:
    import uvloop

    async def main() -> None:
        if kind == "httptools":
            await _bare_protocol(port)
        elif kind == "conduit-bare":
            from conduit_tornado.gateway import bind
            from conduit_tornado.server.http import HttpServer

            await HttpServer(_FixedDelegate()).start(bind("127.0.0.1", port))
        else:
            import tornado.httpserver
            import tornado.web

            class Fixed(tornado.web.RequestHandler):
                def post(self) -> None:
                    self.set_header("Content-Type", "application/json")
                    self.finish(ANSWER)

            app = tornado.web.Application([(r"/v1/chat/completions", Fixed)])
            if kind == "tornado":
                tornado.httpserver.HTTPServer(app).listen(port, "127.0.0.1")
            else:
                from conduit_tornado.gateway import bind
                from conduit_tornado.server.http import HttpServer

                await HttpServer(app).start(bind("127.0.0.1", port))
        await asyncio.Event().wait()

    uvloop.run(main())


class _FixedDelegate:
    """Our server's own per-request work, without Tornado's Application and handlers:
    the same fixed answer from a bare HTTPServerConnectionDelegate."""

    def start_request(self, server_conn: object, request_conn: Any) -> Any:
        return _FixedAnswer(request_conn)


class _FixedAnswer:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def headers_received(self, start_line: object, headers: object) -> None:
        return None

    def data_received(self, chunk: bytes) -> None:
        return None

    def finish(self) -> None:
        from tornado.httputil import HTTPHeaders, ResponseStartLine

        headers = HTTPHeaders(
            {"Content-Type": "application/json", "Content-Length": str(len(ANSWER))}
        )
        self.conn.write_headers(ResponseStartLine("HTTP/1.1", 200, "OK"), headers, ANSWER)
        self.conn.finish()

    def on_connection_close(self) -> None:
        return None


async def _bare_protocol(port: int) -> None:
    import httptools

    response = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"

    class Bare(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_message_complete(self) -> None:
            self.transport.write(response % (len(ANSWER), ANSWER))  # type: ignore[attr-defined]

    await asyncio.get_running_loop().create_server(Bare, "127.0.0.1", port)


def floor(kind: str, seconds: float) -> tuple[float, float]:
    """(req/s, ms of CPU per request) of a trivial handler on server ``kind``."""
    from run import cpu_seconds, free_port, load, pinned

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), kind], preexec_fn=pinned(0)
    )
    try:
        _wait_for(port)  # imports take a while on a busy machine
        cpu0 = cpu_seconds(server.pid)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        run = load(url, '{"model":"x"}', "x", 32, seconds)
        return run.rps, (cpu_seconds(server.pid) - cpu0) * 1000 / max(1, run.requests)
    finally:
        server.terminate()
        server.wait()


def _wait_for(port: int, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def measure(seconds: int) -> None:
    for kind in SERVERS:
        rps, per_request = floor(kind, seconds)
        print(f"{kind:>9} server, uvloop: {rps:8,.0f} req/s, {per_request:.3f} ms CPU per request")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), args.serve[1])
    else:
        sys.path.insert(0, os.path.dirname(__file__))
        measure(args.seconds)
