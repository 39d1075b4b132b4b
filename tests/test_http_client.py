"""The lean provider HTTP client against raw loopback servers that answer byte for byte,
so every wire shape (chunked, gzip, close-delimited, early close, TLS) is the real one."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gzip
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from conduit_tornado.routing.http_client import READ_HIGH_WATER, ClientError, HttpClient

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0
        self.handlers: set[asyncio.Task[None]] = set()

    async def start(self, serve: Serve, ssl_context: ssl.SSLContext | None = None) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            task = asyncio.current_task()
            assert task is not None
            self.handlers.add(task)
            try:
                await serve(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
                pass
            finally:
                writer.close()
                self.handlers.discard(task)

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await reader.readexactly(length)
        self.requests.append(head + body)
        return body

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.handlers):
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)
        await asyncio.sleep(0)

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/v1/things?x=1"


@contextlib.asynccontextmanager
async def serving(
    serve: Serve, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[RawServer, HttpClient]]:
    """A raw server running ``serve`` per connection, and a client; both closed after."""
    raw, client = RawServer(), HttpClient()
    await raw.start(serve, ssl_context)
    try:
        yield raw, client
    finally:
        await client.close()
        await raw.stop()


def answer(body: bytes, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def test_keep_alive_reuses_one_connection_and_sends_the_request_exactly() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            body = await raw.read_request(reader)
            writer.write(answer(b'{"echo":' + body + b"}"))

    async with serving(serve) as (raw, client):
        for i in range(3):
            response = await client.request(
                "p", "POST", raw.url(), body=b"%d" % i, headers={"X-Test": "yes"}, params={"y": "2"}
            )
            assert response.status == 200
            assert response.headers.get("CONTENT-TYPE") == "application/json"
            assert await response.read() == b'{"echo":%d}' % i
            response.release()
        assert raw.connections == 1
        first = raw.requests[0].decode()
        assert first.startswith("POST /v1/things?x=1&y=2 HTTP/1.1\r\n")
        assert f"Host: 127.0.0.1:{raw.port}\r\n" in first
        assert "X-Test: yes\r\n" in first and "Content-Length: 1\r\n" in first


async def test_a_large_answer_read_whole_leaves_its_connection_reusable() -> None:
    # Past READ_HIGH_WATER the client stops reading the socket until the body is taken.
    # One byte past it, the last byte both pauses reading and completes the answer; taken
    # whole, the connection must read again before it goes back to the pool.
    big = b"x" * (READ_HIGH_WATER + 1)
    sent = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        writer.write(answer(big))
        await writer.drain()
        sent.set()
        await raw.read_request(reader)
        writer.write(answer(b"small"))

    async with serving(serve) as (raw, client):
        response = await client.request("p", "POST", raw.url(), body=b"{}")
        await sent.wait()
        for _ in range(500):  # the whole body is buffered before it is read
            if response._conn is None or response._conn.complete:
                break
            await asyncio.sleep(0.01)
        assert await response.read() == big
        response.release()
        response = await client.request("p", "POST", raw.url(), body=b"{}")
        assert await asyncio.wait_for(response.read(), 5) == b"small"
        response.release()
        assert raw.connections == 1


async def test_chunked_gzip_body_arrives_decoded_piece_by_piece() -> None:
    packed = gzip.compress(b"data: one\n\ndata: two\n\n")
    release = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        half = len(packed) // 2
        writer.write(b"%x\r\n%s\r\n" % (half, packed[:half]))
        await writer.drain()
        await release.wait()  # the client must see the first piece before the rest exists
        writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(packed) - half, packed[half:]))
        await reader.read()

    async with serving(serve) as (raw, client):
        response = await client.request("p", "POST", raw.url(), body=b"{}")
        pieces = []
        async for piece in response.iter_any():
            pieces.append(piece)
            release.set()
        response.release()
        assert b"".join(pieces) == b"data: one\n\ndata: two\n\n"
        assert len(pieces) >= 2


async def test_a_body_delimited_by_close_is_read_to_the_end() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
        await writer.drain()

    async with serving(serve) as (raw, client):
        response = await client.request("p", "POST", raw.url(), body=b"{}")
        assert await response.read() == b"all of it"
        response.release()


async def test_a_pooled_connection_the_server_closed_is_replaced_once() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        writer.write(answer(b"{}"))
        await writer.drain()
        # then close without saying so: the keep-alive race every pool meets

    async with serving(serve) as (raw, client):
        for _ in range(2):
            response = await client.request("p", "POST", raw.url(), body=b"{}")
            assert await response.read() == b"{}"
            response.release()
            await asyncio.sleep(0.05)  # let the server's close arrive
        assert raw.connections == 2
        assert len(raw.requests) == 2  # each request was answered once, none twice


async def test_no_first_byte_in_time_is_a_timeout() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        await reader.read()

    async with serving(serve) as (raw, client):
        with pytest.raises(ClientError) as caught:
            await client.request("p", "POST", raw.url(), body=b"{}", first_byte_timeout=0.1)
        assert caught.value.timeout


async def test_the_total_deadline_covers_a_stalled_body() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await reader.read()

    async with serving(serve) as (raw, client):
        response = await client.request(
            "p", "POST", raw.url(), body=b"{}", first_byte_timeout=5, total_timeout=0.2
        )
        with pytest.raises(ClientError) as caught:
            await response.read()
        assert caught.value.timeout
        response.release()


async def test_the_first_byte_deadline_ends_once_the_head_is_in() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nfirst")
        await writer.drain()
        await asyncio.sleep(0.3)  # well past the first-byte deadline, within the total
        writer.write(b" end")
        await writer.drain()
        await reader.read()

    async with serving(serve) as (raw, client):
        response = await client.request(
            "p", "POST", raw.url(), body=b"{}", first_byte_timeout=0.1, total_timeout=5
        )
        assert await response.read() == b"first end"
        response.release()


async def test_malformed_answers_and_early_closes_are_errors() -> None:
    replies = iter(
        [b"NOT HTTP AT ALL\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort"]
    )

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        writer.write(next(replies))
        await writer.drain()

    async with serving(serve) as (raw, client):
        with pytest.raises(ClientError) as caught:
            await client.request("p", "POST", raw.url(), body=b"{}")
        assert not caught.value.timeout and not caught.value.connect
        response = await client.request("p", "POST", raw.url(), body=b"{}")
        with pytest.raises(ClientError):
            await response.read()
        response.release()


async def test_refused_connection_is_a_connect_error() -> None:
    from tests.conftest import free_port

    client = HttpClient()
    with pytest.raises(ClientError) as caught:
        await client.request("p", "GET", f"http://127.0.0.1:{free_port()}/")
    assert caught.value.connect
    await client.close()


async def test_a_streamed_body_is_sent_whole_with_its_length() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = await raw.read_request(reader)
        writer.write(answer(b"%d" % len(body)))

    async def pieces() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"x" * 65536

    async with serving(serve) as (raw, client):
        response = await client.request("p", "POST", raw.url(), body=pieces(), length=40 * 65536)
        assert await response.read() == str(40 * 65536).encode()
        response.release()


async def test_abandoning_a_stream_midway_never_reuses_its_connection() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await raw.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await writer.drain()

    async with serving(serve) as (raw, client):
        for _ in range(2):
            response = await client.request("p", "POST", raw.url(), body=b"{}")
            async for piece in response.iter_any():
                assert piece == b"first"
                break
            response.release()
        assert raw.connections == 2


async def test_https_with_the_callers_trust(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        writer.write(answer(b'{"tls":true}'))
        await writer.drain()

    async with serving(serve, server_ctx) as (raw, untrusting):
        url = f"https://localhost:{raw.port}/v1"
        with pytest.raises(ClientError) as caught:
            await untrusting.request("p", "POST", url, body=b"{}")
        assert caught.value.connect  # a certificate nobody vouches for is refused

        trusting = HttpClient(ssl_context=ssl.create_default_context(cafile=str(cert)))
        response = await trusting.request("p", "POST", url, body=b"{}")
        assert await response.read() == b'{"tls":true}'
        response.release()
        await trusting.close()


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
