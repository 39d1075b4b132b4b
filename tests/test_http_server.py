"""Our HTTP/1.1 server at the byte level, through a real gateway: what clients other than
the SDK send (pipelining, HTTP/1.0, chunked uploads, Expect: 100-continue, garbage) and
what they must get back. Each runs on both servers (ours and the Tornado fallback,
CONDUIT_HTTP_SERVER), where the answers differ only as noted."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import tornado.web

from conduit_tornado import AdminClient, Gateway
from conduit_tornado.server.limits import ServerLimits
from tests.conftest import MASTER_KEY, GatewayFactory
from tests.wire import KINDS, closed_by_server, connect, read_response, serve

pytestmark = pytest.mark.asyncio
CHAT = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _gateway(start_gateway: GatewayFactory, kind: str) -> tuple[Gateway, str]:
    gw = await start_gateway(http_server=kind)
    async with AdminClient(gw.url, MASTER_KEY) as admin:
        await admin.create_provider(name="mock", type="mock")
        await admin.create_model(name="m", deployments=[{"provider": "mock", "model": "x"}])
        key = (await admin.create_key(name="wire"))["key"]
    return gw, key


async def _open(gw: Gateway) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", gw.port)


def _post(key: str, body: bytes, *extra: str) -> bytes:
    lines = [
        "POST /v1/chat/completions HTTP/1.1",
        "Host: x",
        f"Authorization: Bearer {key}",
        "Content-Type: application/json",
        *extra,
    ]
    if not any(e.lower().startswith("transfer-encoding") for e in extra):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def test_pipelined_requests_are_answered_in_order(
    start_gateway: GatewayFactory, kind: str
) -> None:
    gw, key = await _gateway(start_gateway, kind)
    reader, writer = await _open(gw)
    writer.write(
        _post(key, CHAT)
        + b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n"
        + b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + key.encode()
        + b"\r\n\r\n"
    )
    first, second, third = [await read_response(reader) for _ in range(3)]
    assert first[0] == 200 and json.loads(first[2])["object"] == "chat.completion"
    assert second[0] == 200
    assert third[0] == 200 and json.loads(third[2])["object"] == "list"
    writer.close()


async def test_http_1_0_gets_a_whole_answer_and_a_close(
    start_gateway: GatewayFactory, kind: str
) -> None:
    gw, _ = await _gateway(start_gateway, kind)
    reader, writer = await _open(gw)
    writer.write(b"GET /health/live HTTP/1.0\r\n\r\n")
    status, headers, body = await read_response(reader)
    assert status == 200 and "transfer-encoding" not in headers and body
    assert await reader.read() == b""  # closed after the answer
    writer.close()

    reader, writer = await _open(gw)
    for _ in range(2):  # HTTP/1.0 keep-alive, when asked for, is honoured
        writer.write(b"GET /health/live HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, _ = await read_response(reader)
        assert status == 200 and headers["connection"].lower() == "keep-alive"
    writer.close()


async def test_chunked_upload_then_a_streamed_answer_on_one_connection(
    start_gateway: GatewayFactory, kind: str
) -> None:
    gw, key = await _gateway(start_gateway, kind)
    reader, writer = await _open(gw)
    half = len(CHAT) // 2
    writer.write(
        _post(key, b"", "Transfer-Encoding: chunked")
        + b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, CHAT[:half], len(CHAT) - half, CHAT[half:])
    )
    status, _, body = await read_response(reader)
    assert status == 200 and json.loads(body)["choices"][0]["message"]["content"]

    streamed = json.dumps({**json.loads(CHAT), "stream": True}).encode()
    writer.write(_post(key, streamed))
    status, headers, body = await read_response(reader)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert headers["transfer-encoding"] == "chunked"
    assert body.rstrip().endswith(b"data: [DONE]")
    writer.write(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")  # still usable
    assert (await read_response(reader))[0] == 200
    writer.close()


async def test_expect_100_continue_only_after_the_key_is_accepted(
    start_gateway: GatewayFactory, kind: str
) -> None:
    gw, key = await _gateway(start_gateway, kind)
    reader, writer = await _open(gw)
    head = _post(key, CHAT, "Expect: 100-continue")
    writer.write(head[: -len(CHAT)])
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100 ")
    writer.write(CHAT)
    assert (await read_response(reader))[0] == 200
    writer.close()

    reader, writer = await _open(gw)
    head = _post("condt_wrong", CHAT, "Expect: 100-continue")
    writer.write(head[: -len(CHAT)])
    status, _, body = await read_response(reader)  # refused before any body was sent
    assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
    assert await reader.read() == b""  # and the unsent body is not waited for
    writer.close()


BIG_HEAD = b"GET /health/live HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"


@pytest.mark.parametrize(
    ("raw", "status", "code", "tornado_status"),
    [
        (b"GET / NOT-HTTP\r\n\r\n", 400, "malformed_request", 400),
        (b"GET /health/live HTTP/1.1\r\n\r\n", 400, "malformed_request", 400),  # no Host
        (b"GET /health/live HTTP/1.1\r\nBad Header\r\n\r\n", 400, "malformed_request", 400),
        (b"BREW /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method_not_allowed", 405),
        (b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", 405, "method_not_allowed", 405),
        (BIG_HEAD, 431, "headers_too_large", None),
    ],
)
async def test_unparseable_requests_get_an_openai_error_and_a_close(
    start_gateway: GatewayFactory,
    kind: str,
    raw: bytes,
    status: int,
    code: str,
    tornado_status: int | None,
) -> None:
    """Ours answers each in OpenAI's envelope and closes; Tornado's server answers a bare
    400, leaves an unknown method to the handlers (405 in the envelope) and drops an
    oversized head unanswered."""
    gw = await start_gateway(http_server=kind)
    reader, writer = await _open(gw)
    writer.write(raw)
    if kind == "conduit":
        got, headers, body = await read_response(reader)
        assert got == status
        assert headers["x-request-id"].startswith("req_")
        error: dict[str, Any] = json.loads(body)["error"]
        assert error["code"] == code and error["type"] == "invalid_request_error"
        assert await closed_by_server(reader) == b""
    elif tornado_status is None:
        assert await closed_by_server(reader) == b""
    else:
        got, _, body = await read_response(reader)
        assert got == tornado_status
        if body:
            assert json.loads(body)["error"]["type"] == "invalid_request_error"
    writer.close()
    async with AdminClient(gw.url, MASTER_KEY) as admin:  # and the server serves on
        assert (await admin.list_keys())["data"] == []


async def test_request_headers_reach_the_handler_whole_repeats_included(kind: str) -> None:
    class Echo(tornado.web.RequestHandler):
        def get(self) -> None:
            self.finish(
                {
                    "cookies": self.request.headers.get_list("Cookie"),
                    "agent": self.request.headers.get("user-agent"),
                }
            )

    async with serve(kind, [(r"/echo", Echo)]) as (_, port):
        reader, writer = await connect(port)
        writer.write(
            b"GET /echo HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\nUSER-AGENT: t/1\r\n"
            b"cookie: b=2\r\n\r\n"
        )
        status, _, body = await read_response(reader)
        assert status == 200
        assert json.loads(body) == {"cookies": ["a=1", "b=2"], "agent": "t/1"}
        writer.close()


async def test_idle_connections_are_closed_and_busy_ones_are_not(kind: str) -> None:
    class Slow(tornado.web.RequestHandler):
        async def get(self) -> None:
            await asyncio.sleep(0.6)
            self.finish("done")

    limits = ServerLimits(header_timeout=0.2, keepalive_timeout=0.2)
    async with serve(kind, [(r"/slow", Slow)], limits) as (_, port):
        idle_reader, idle_writer = await connect(port)
        busy_reader, busy_writer = await connect(port)
        busy_writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await closed_by_server(idle_reader) == b""  # closed by the sweep
        status, _, body = await read_response(busy_reader)
        assert (status, body) == (200, b"done")
        idle_writer.close()
        busy_writer.close()


async def test_a_client_leaving_mid_upload_ends_its_request(
    start_gateway: GatewayFactory, kind: str
) -> None:
    gw, key = await _gateway(start_gateway, kind)
    assert gw.ctx is not None
    _reader, writer = await _open(gw)
    writer.write(_post(key, CHAT)[: -len(CHAT) // 2])  # headers and half the body
    await writer.drain()
    for _ in range(200):  # the request is admitted and waits for the rest of its body
        if gw.ctx.in_flight.requests:
            break
        await asyncio.sleep(0.01)
    assert gw.ctx.in_flight.requests == 1
    writer.close()
    for _ in range(200):
        if not gw.ctx.in_flight.requests:
            break
        await asyncio.sleep(0.01)
    for _ in range(200):
        if not _handlers_running():
            break
        await asyncio.sleep(0.01)
    assert not _handlers_running()  # not left waiting for a body that will never come


def _handlers_running() -> list[asyncio.Task[Any]]:
    running = "RequestHandler._execute"
    return [t for t in asyncio.all_tasks() if getattr(t.get_coro(), "__qualname__", "") == running]
