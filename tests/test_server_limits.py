"""What a hostile or broken client cannot do to the HTTP servers, over real loopback
sockets: hold a connection by sending slowly or not reading, pile up pipelined requests,
exhaust connections, or break the framing of the next answer. Each test runs on both
servers (ours and the Tornado fallback) except where Tornado offers no such limit.
Deadlines are set small in the server's limits; the tests wait for them with generous
bounds only."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import pytest
import tornado.iostream
import tornado.web

from conduit_tornado.server.limits import ServerLimits
from tests.wire import KINDS, closed_by_server, connect, read_response, serve

pytestmark = pytest.mark.asyncio
SHORT = ServerLimits(header_timeout=0.3, body_timeout=0.3, write_timeout=0.3, keepalive_timeout=0.3)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Hello(tornado.web.RequestHandler):
    def get(self) -> None:
        self.finish("hello")


@tornado.web.stream_request_body
class Upload(tornado.web.RequestHandler):
    closed: asyncio.Event

    def prepare(self) -> None:
        self.received = b""

    def data_received(self, chunk: bytes) -> None:
        self.received += chunk

    def post(self) -> None:
        self.finish(self.received)

    def on_connection_close(self) -> None:
        type(self).closed.set()


async def test_a_head_that_never_ends_is_cut_off(kind: str) -> None:
    async with serve(kind, [(r"/", Hello)], SHORT) as (_, port):
        reader, writer = await connect(port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and then nothing more
        rest = await closed_by_server(reader)
        if kind == "conduit":  # ours says why
            assert rest.startswith(b"HTTP/1.1 408 ")
            assert json.loads(rest.split(b"\r\n\r\n", 1)[1])["error"]["code"] == ("request_timeout")
        writer.close()


async def test_a_silent_or_idle_connection_is_closed(kind: str) -> None:
    async with serve(kind, [(r"/", Hello)], SHORT) as (_, port):
        reader, writer = await connect(port)  # never sends a byte
        assert await closed_by_server(reader) == b""
        writer.close()

        reader, writer = await connect(port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(reader))[2] == b"hello"
        assert await closed_by_server(reader) == b""  # idle past keepalive_timeout
        writer.close()


async def test_a_stalled_upload_is_cut_off_and_its_handler_told(kind: str) -> None:
    Upload.closed = asyncio.Event()
    async with serve(kind, [(r"/up", Upload)], SHORT) as (_, port):
        reader, writer = await connect(port)
        writer.write(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        rest = await closed_by_server(reader)
        if kind == "conduit":
            assert rest.startswith(b"HTTP/1.1 408 ")
        async with asyncio.timeout(10):
            await Upload.closed.wait()
        writer.close()


async def test_a_client_that_never_reads_a_stream_is_dropped() -> None:
    """Tornado's server has no write timeout: ours only."""
    ended = asyncio.Event()

    class Firehose(tornado.web.RequestHandler):
        async def get(self) -> None:
            written = 0
            try:
                while written < 256 * 1024 * 1024:  # a server that never pushes back fails
                    self.write(b"x" * 16384)  # below CORK_LIMIT: the corked path
                    await self.flush()
                    written += 16384
            except tornado.iostream.StreamClosedError:
                ended.set()

    async with serve("conduit", [(r"/", Firehose)], SHORT) as (server, port):
        _, writer = await connect(port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
        async with asyncio.timeout(15):
            await ended.wait()
        assert not server.connections
        writer.close()


async def test_a_last_answer_never_read_does_not_hold_the_connection() -> None:
    """Ours only. The answer is whole and the connection closing, but the client takes
    none of it: past write_timeout the connection is dropped, not kept to flush."""
    size = 8 * 1024 * 1024

    class Big(tornado.web.RequestHandler):
        def get(self) -> None:
            self.finish(b"x" * size)

    async with serve("conduit", [(r"/", Big)], SHORT) as (server, port):
        reader, writer = await connect(port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        for _ in range(1000):  # dropped within a generous bound of write_timeout
            if not server.connections:
                break
            await asyncio.sleep(0.01)
        assert not server.connections
        received = await closed_by_server(reader)  # what the kernels held, then the end
        assert len(received) < size
        writer.close()


async def test_pipelined_requests_from_a_client_that_never_reads_are_not_all_read(
    kind: str,
) -> None:
    """The first request is held; the client pipelines far more than the kernel's
    buffers hold. A server that reads and queues every request lets the client's send
    complete; one that stops reading while an answer is pending does not."""
    release = asyncio.Event()

    class Held(tornado.web.RequestHandler):
        async def get(self) -> None:
            await release.wait()
            self.finish("ok")

    request = b"GET /" + b"p" * 1000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    pipelined = request * (8 * 1024 * 1024 // len(request))
    async with serve(kind, [(r"/.*", Held)], receive_buffer=65536) as (_, port):
        reader, writer = await connect(port, send_buffer=65536)
        writer.write(pipelined)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(writer.drain(), 3)
        release.set()  # the server goes on, a request at a time, as the client reads
        for _ in range(3):
            assert (await read_response(reader))[2] == b"ok"
        writer.transport.abort()


async def test_a_partial_head_after_many_pipelined_requests_is_no_oversized_head(
    kind: str,
) -> None:
    request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 40 + b"\r\n\r\n"
    count = 3000  # far more than MAX_HEADER_BYTES in all, each head small
    async with serve(kind, [(r"/", Hello)]) as (_, port):
        reader, writer = await connect(port)
        writer.write(request * count + b"GET / HTTP/1.1\r\nHost: x\r\n")
        for _ in range(count):
            status, _, body = await read_response(reader)
            assert (status, body) == (200, b"hello")
        writer.write(b"\r\n")  # the last head ends and is answered too
        assert (await read_response(reader))[0] == 200
        writer.close()


class Overstated(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Length", "20")
        self.finish(b"x" * 10)


class Understated(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Length", "10")
        self.finish(b"x" * 20)


def _framing_kept(received: bytes, declared: int) -> None:
    """Whatever arrived before the close holds no byte past the declared length (Tornado
    refuses the oversized write whole; ours sends the declared part)."""
    if received:
        head, _, body = received.partition(b"\r\n\r\n")
        assert f"Content-Length: {declared}".encode() in head
        assert len(body) <= declared


async def test_an_answer_longer_than_its_content_length_ends_the_connection(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    async with serve(kind, [(r"/", Understated)]) as (_, port):
        reader, writer = await connect(port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        # The bytes beyond are never sent as the start of a next answer: closed.
        received = await closed_by_server(reader)
        _framing_kept(received, 10)
        if kind == "conduit":
            assert received.endswith(b"\r\n\r\n" + b"x" * 10)
            assert any("Content-Length" in r.getMessage() for r in caplog.records)
        writer.close()


async def test_an_answer_shorter_than_its_content_length_ends_the_connection(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    async with serve(kind, [(r"/", Overstated)]) as (_, port):
        reader, writer = await connect(port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        received = await closed_by_server(reader)
        _framing_kept(received, 20)
        assert received.endswith(b"\r\n\r\n" + b"x" * 10)
        if kind == "conduit":
            assert any("Content-Length" in r.getMessage() for r in caplog.records)
        writer.close()


async def test_an_upgrade_other_than_websocket_is_served_as_http_1_1(kind: str) -> None:
    """What curl --http2 sends over http://: the body must reach the handler."""
    Upload.closed = asyncio.Event()
    async with serve(kind, [(r"/up", Upload)]) as (_, port):
        reader, writer = await connect(port)
        for body in (b"hello", b"again"):
            writer.write(
                b"POST /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
                b"Content-Length: 5\r\n\r\n" + body
            )
            status, _, answer = await read_response(reader)
            assert (status, answer) == (200, body)
        writer.write(b"GET /up HTTP/1.1\r\nHost: x\r\n\r\n")  # still plain HTTP/1.1
        assert (await read_response(reader))[0] == 405
        writer.close()


async def test_connections_past_the_cap_get_503_and_the_server_recovers(kind: str) -> None:
    limits = ServerLimits(max_connections=3)
    async with serve(kind, [(r"/", Hello)], limits) as (_, port):
        held = [await connect(port) for _ in range(3)]
        for reader, writer in held:  # each is being served
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_response(reader))[2] == b"hello"
        reader, writer = await connect(port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = await read_response(reader)
        assert status == 503 and headers["retry-after"] == "1"
        assert json.loads(body)["error"] == {
            "message": "The server is at its connection limit; try again shortly.",
            "type": "service_unavailable",
            "param": None,
            "code": "too_many_connections",
        }
        assert await closed_by_server(reader) == b""
        writer.close()
        for _, held_writer in held:
            held_writer.close()
        for _ in range(100):  # the server notices the closes; then serves again
            reader, writer = await connect(port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            status = (await read_response(reader))[0]
            writer.close()
            if status == 200:
                break
            await asyncio.sleep(0.05)
        assert status == 200


async def test_closing_all_connections_ends_held_ones(kind: str) -> None:
    async with serve(kind, [(r"/", Hello)]) as (server, port):
        reader, writer = await connect(port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(reader))[0] == 200
        await server.close_all_connections()
        assert await closed_by_server(reader) == b""
        with contextlib.suppress(ConnectionError):
            writer.close()


async def test_requests_queued_behind_a_departed_client_are_not_run() -> None:
    """Ours only: Tornado's server runs every request it has buffered, client gone or not.
    Ours reads nothing while a request waits behind another, so it learns of the client's
    leaving when an answer meets the closed socket: at most the request after that runs
    (its answer is the one that finds out)."""
    release = asyncio.Event()
    runs: list[str] = []

    class Held(tornado.web.RequestHandler):
        async def get(self) -> None:
            runs.append(self.request.path)
            await release.wait()
            self.finish("ok")

    async with serve("conduit", [(r"/.*", Held)]) as (server, port):
        _, writer = await connect(port)
        writer.write(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(50)))
        await writer.drain()
        for _ in range(500):
            if runs:
                break
            await asyncio.sleep(0.01)
        writer.transport.abort()  # gone, with 49 requests sent and unanswered
        await asyncio.sleep(0.2)
        release.set()  # the first answer meets the closed socket
        for _ in range(500):
            if not server.connections:
                break
            await asyncio.sleep(0.01)
        assert not server.connections
    assert runs in (["/0"], ["/0", "/1"])
