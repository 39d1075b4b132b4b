"""The incremental multipart parser, fed in chunks of every size, and hostile heads."""

from __future__ import annotations

import asyncio
import http.client
import json

import pytest

from conduit_tornado.server.multipart import (
    MultipartError,
    MultipartParser,
    boundary_of,
    header_params,
)
from tests.proxy_setup import Wired

LIVENESS = 60.0  # seconds: a liveness bound (minutes before the fix), not a measurement

BOUNDARY = b"----conduitBoundary7MA4YWxk"
AUDIO = bytes(range(256)) * 40 + b"\r\n--not-the-boundary\r\n" + b"tail"


def body(fields: dict[str, str], file: bytes = AUDIO) -> bytes:
    out = b""
    for name, value in fields.items():
        out += b"--" + BOUNDARY + b"\r\n"
        out += f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    out += b"--" + BOUNDARY + b"\r\n"
    out += b'Content-Disposition: form-data; name="file"; filename="speech.wav"\r\nContent-Type: audio/wav\r\n\r\n'
    out += file + b"\r\n--" + BOUNDARY + b"--\r\n"
    return out


@pytest.mark.parametrize("chunk", [1, 7, 64, 4096, 10**6])
def test_parses_fields_and_spools_the_file(chunk: int) -> None:
    raw = body({"model": "whisper", "language": "en"})
    parser = MultipartParser(BOUNDARY, spool_bytes=1024)
    for i in range(0, len(raw), chunk):
        parser.feed(raw[i : i + chunk])
    parts = parser.close()
    assert parts["model"].text == "whisper" and parts["language"].text == "en"
    file = parts["file"]
    assert (
        file.filename == "speech.wav"
        and file.content_type == "audio/wav"
        and file.size == len(AUDIO)
    )
    assert file.file is not None and file.file.read() == AUDIO
    parser.discard()


def test_boundary_rules() -> None:
    assert boundary_of('multipart/form-data; boundary="abc def"') == b"abc def"
    assert boundary_of("multipart/form-data; charset=utf-8; boundary=xyz") == b"xyz"
    for bad in (
        "application/json",
        "multipart/form-data",
        "multipart/form-data; boundary=" + "x" * 71,
    ):
        with pytest.raises(MultipartError):
            boundary_of(bad)


@pytest.mark.parametrize(
    "raw",
    [
        b"no boundary at all" * 2000,
        b"--" + BOUNDARY + b"\r\nX-Header: " + b"a" * 20000,
        b"--" + BOUNDARY + b"\r\nContent-Disposition: attachment\r\n\r\nx\r\n--" + BOUNDARY + b"--",
        b"--"
        + BOUNDARY
        + b'\r\nContent-Disposition: form-data; name="model"\r\n\r\n'
        + b"m" * 70000,
        body({"model": "m"})[:-20],  # cut before the closing boundary
    ],
)
def test_malformed_bodies_are_refused(raw: bytes) -> None:
    parser = MultipartParser(BOUNDARY)

    def parse() -> None:
        for i in range(0, len(raw), 1000):
            parser.feed(raw[i : i + 1000])
        parser.close()

    with pytest.raises(MultipartError):
        parse()


def test_near_miss_delimiters_are_file_data() -> None:
    # Thousands of almost-delimiters: all of it is data, and none of it ends the part.
    near_miss = (b"\r\n--" + BOUNDARY[:-1] + b"X") * 50_000
    raw = body({}, file=near_miss)
    parser = MultipartParser(BOUNDARY)
    for i in range(0, len(raw), 65536):
        parser.feed(raw[i : i + 65536])
    file = parser.close()["file"]
    assert file.size == len(near_miss) and file.file is not None and file.file.read() == near_miss
    parser.discard()


@pytest.mark.parametrize(
    ("header", "kind", "params"),
    [
        ('form-data; name="model"', "form-data", {"name": "model"}),
        (
            'form-data; name="file"; filename="a \\"b\\".wav"',
            "form-data",
            {"name": "file", "filename": 'a "b".wav'},
        ),
        (
            "form-data; name=plain ; FileName=x.wav",
            "form-data",
            {"name": "plain", "filename": "x.wav"},
        ),
        ('form-data; name="a;b"; junk; name="second"', "form-data", {"name": "a;b"}),
        ("form-data", "form-data", {}),
        ("form-data; " + "a" * 16_000, "form-data", {}),
        ('form-data; name="x"; ' + "a" * 16_000, "form-data", {"name": "x"}),
    ],
)
def test_header_parameters(header: str, kind: str, params: dict[str, str]) -> None:
    assert header_params(header) == (kind, params)


def test_unterminated_quotes_are_refused() -> None:
    for header in ('form-data; name="open', 'form-data; name="ends in \\'):
        with pytest.raises(MultipartError):
            header_params(header)


def test_a_head_sent_a_byte_at_a_time_is_parsed() -> None:
    raw = body({"model": "whisper"})
    parser = MultipartParser(BOUNDARY)
    for i in range(len(raw)):
        parser.feed(raw[i : i + 1])
    assert parser.close()["model"].text == "whisper"
    parser.discard()


@pytest.mark.asyncio
async def test_long_part_headers_do_not_stall_the_gateway(wired: Wired) -> None:
    """Probe: part headers of `form-data; name=...; ` + 16,000 letters held the event loop
    for seconds each (a regex retried at every position), 64 parts adding up. The upload
    is sent from a thread whose socket gives up after LIVENESS seconds: a gateway whose
    loop is held that long cannot answer it, one that parses linearly answers at once."""
    filler = "a" * 16_000
    raw = b""
    for i in range(62):
        raw += b"--" + BOUNDARY + b"\r\n"
        raw += f'Content-Disposition: form-data; name="f{i}"; {filler}\r\n\r\nv\r\n'.encode()
    raw += body({"model": "mock"})
    port = wired.gateway.port

    def send() -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=LIVENESS)
        try:
            connection.request(
                "POST",
                "/v1/audio/transcriptions",
                body=raw,
                headers={
                    "Authorization": f"Bearer {wired.key}",
                    "Content-Type": f"multipart/form-data; boundary={BOUNDARY.decode()}",
                },
            )
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    status, answer = await asyncio.to_thread(send)
    assert status == 200, answer
    assert json.loads(answer)["text"] == f"Mock transcription of {len(AUDIO)} bytes."
