"""Property-based fuzzing of request parsing in both HTTP servers (ours and the Tornado
fallback), with raw bytes over a socket to a real gateway (in its own process, watched by
the loop-lag watchdog).

Properties: whatever a client sends (a request with odd methods, paths, versions, headers,
framing and bodies, cut short or followed by garbage), the server answers with well-formed
HTTP and a status below 500, or closes the connection; it does so promptly once the client
has finished sending; it keeps serving others; and its event loop is never blocked."""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gateway_process import GatewayProcess
from tests.wire import KINDS

STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


@pytest.fixture(scope="module", params=KINDS)
def served(request: pytest.FixtureRequest) -> Iterator[GatewayProcess]:
    # Short timeouts: a request cut short is given up on within a second.
    timeouts = {f"CONDUIT_{n}_TIMEOUT": "1" for n in ("HEADER", "BODY", "KEEPALIVE")}
    gw = GatewayProcess(CONDUIT_HTTP_SERVER=str(request.param), **timeouts)
    try:
        yield gw
        assert gw.stalls() == [], "the gateway's event loop was blocked"
    finally:
        gw.stop()


LAST = b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def exchange(gw: GatewayProcess, data: bytes) -> bytes:
    """Send ``data`` and a last request asking to close, read until the server closes.
    (Not a half-close: both servers take the end of a client's sending for its leaving.)"""
    host, port = gw.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        with contextlib.suppress(OSError):  # it may refuse and close before reading all
            s.sendall(data + LAST)
        received = b""
        try:
            while chunk := s.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return received


def token(alphabet: str) -> st.SearchStrategy[bytes]:
    return st.text(alphabet, min_size=1, max_size=10).map(str.encode)


TCHAR = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~"
METHODS = st.sampled_from([b"GET", b"POST", b"PATCH", b"DELETE", b"HEAD", b"OPTIONS"]) | token(
    TCHAR
)
PATHS = st.sampled_from(
    [
        b"/v1/chat/completions",
        b"/v1/models",
        b"/health/live",
        b"/admin/v1/keys",
        b"/v1/audio/transcriptions",
        b"/openapi.json",
        b"*",
        b"http://x/v1/models",
    ]
) | st.binary(min_size=1, max_size=20).filter(lambda b: b" " not in b and b"\n" not in b)
VERSIONS = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x", b"HTTP/"])
HEADER_NAMES = st.sampled_from(
    [
        b"Host",
        b"Content-Length",
        b"Transfer-Encoding",
        b"Content-Type",
        b"Authorization",
        b"Expect",
        b"Connection",
        b"X-Forwarded-For",
        b"X-Request-Id",
    ]
) | token(TCHAR)
HEADER_VALUES = st.sampled_from(
    [
        b"chunked",
        b"100-continue",
        b"close",
        b"keep-alive",
        b"5",
        b"-1",
        b"99999999999999999999",
        b"application/json",
        b"multipart/form-data; boundary=xyz",
        b"Bearer condt_nope",
    ]
) | st.binary(max_size=30).filter(lambda b: b"\n" not in b and b"\r" not in b)
BODIES = st.sampled_from(
    [b"", b"{}", b'{"model": "m", "messages": [{"role": "user"}]}', b"0\r\n\r\n", b"5\r\nhello"]
) | st.binary(max_size=200)


@st.composite
def requests_(draw: st.DrawFn) -> bytes:
    eol = draw(st.sampled_from([b"\r\n", b"\r\n", b"\n"]))
    line = draw(METHODS) + b" " + draw(PATHS) + b" " + draw(VERSIONS)
    headers = draw(st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=6))
    head = line + eol + b"".join(n + b": " + v + eol for n, v in headers) + eol
    data = head + draw(BODIES)
    if draw(st.booleans()):  # cut short, anywhere
        data = data[: draw(st.integers(0, len(data)))]
    if draw(st.booleans()):  # or followed by more (a pipelined request, or garbage)
        data += draw(st.binary(max_size=60) | st.just(b"GET /v1/models HTTP/1.1\r\n\r\n"))
    return data


FUZZ = settings(
    max_examples=120,
    deadline=5000,  # ms: a request cut short is dropped after 1 s; the rest is prompt
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)


@FUZZ
@given(requests_())
def test_any_request_gets_well_formed_http_below_500_or_a_close(
    served: GatewayProcess, data: bytes
) -> None:
    answer = exchange(served, data)
    if answer:
        assert STATUS.match(answer), answer[:200]
        statuses = [int(code) for code in STATUS.findall(answer)]
        assert all(100 <= s < 500 for s in statuses), answer[:500]
    # The server keeps serving: a plain request on a new connection is answered.
    assert exchange(served, b"").startswith(b"HTTP/1.1 200 ")
