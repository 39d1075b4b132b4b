"""The connection cap and accept errors, in a server process of their own with a small
open-file limit (``ulimit -n``) on uvloop, as `conduit-tornado serve` runs (and on
asyncio's loop, which logged every failed accept, thousands a second): silent
connections beyond what the process can hold get a 503 rather than starving everyone,
running out of descriptors anyway is logged at most once a second, and the server serves
again once clients leave."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator

import pytest

from tests.wire import read_response

pytestmark = pytest.mark.asyncio

SERVER = textwrap.dedent(
    """
    import asyncio, logging, os, resource, sys
    import tornado.web
    import uvloop
    from conduit_tornado.gateway import bind
    from conduit_tornado.server.http import HttpServer
    from conduit_tornado.server.limits import ServerLimits
    from conduit_tornado.server.tornado_server import TornadoHttpServer

    limit, spare, loop, kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")

    class Hello(tornado.web.RequestHandler):
        def get(self):
            self.finish("hello")

    async def main():
        server_class = HttpServer if kind == "conduit" else TornadoHttpServer
        app = tornado.web.Application([(r"/", Hello)])
        server = server_class(app, ServerLimits(header_timeout=60, keepalive_timeout=60))
        sockets = bind("127.0.0.1", 0)
        await server.start(sockets)
        if spare:  # descriptors held elsewhere (store, provider connections): few left
            hog = []
            while len(os.listdir("/proc/self/fd")) < limit - spare:
                hog.append(os.open("/dev/null", os.O_RDONLY))
        print(sockets[0].getsockname()[1], server.cap, flush=True)
        await asyncio.Event().wait()

    uvloop.run(main()) if loop == "uvloop" else asyncio.run(main())
    """
)


@contextlib.asynccontextmanager
async def server_process(
    limit: int, spare: int, loop: str = "uvloop", kind: str = "conduit"
) -> AsyncIterator[tuple[int, int, list[str]]]:
    """(port, connection cap, stderr lines once the process has ended)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SERVER,
        str(limit),
        str(spare),
        loop,
        kind,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(30):
            port, cap = map(int, (await proc.stdout.readline()).split())
        yield port, cap, lines
    finally:
        proc.terminate()
        _, err = await proc.communicate()
        lines.extend(err.decode().splitlines())


async def _get(port: int) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, _, body = await read_response(reader)
        return status, body
    finally:
        writer.close()


async def _silent(port: int, count: int) -> list[asyncio.StreamWriter]:
    writers = []
    for _ in range(count):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)
    return writers


async def _served_again(port: int) -> int:
    status = 0
    for _ in range(50):
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            async with asyncio.timeout(5):
                status, _ = await _get(port)
        if status == 200:
            break
        await asyncio.sleep(0.1)
    return status


async def test_silent_connections_past_the_open_file_limit_get_503() -> None:
    async with server_process(limit=64, spare=0) as (port, cap, _):
        assert cap == 32  # max_connections lowered to fit 64 descriptors
        writers = await _silent(port, cap)
        status, body = await _get(port)
        assert status == 503
        assert json.loads(body)["error"]["code"] == "too_many_connections"
        for writer in writers:
            writer.close()
        assert await _served_again(port) == 200


@pytest.mark.parametrize(
    ("loop", "kind"), [("uvloop", "conduit"), ("asyncio", "conduit"), ("asyncio", "tornado")]
)
async def test_running_out_of_descriptors_is_logged_once_a_second(loop: str, kind: str) -> None:
    started = time.monotonic()
    async with server_process(limit=64, spare=6, loop=loop, kind=kind) as (port, _, lines):
        writers = await _silent(port, 40)  # most wait in the backlog: accept fails
        await asyncio.sleep(3)
        for writer in writers:
            writer.close()
        assert await _served_again(port) == 200
    reports = [line for line in lines if "accept" in line.lower()]
    assert reports, "\n".join(lines)  # it was reported
    seconds = time.monotonic() - started
    assert len(reports) <= seconds + 1, "\n".join(reports)  # not once per attempt
