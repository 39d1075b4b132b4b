"""Property-based fuzzing of the parsers that read untrusted bytes: multipart uploads
(server/multipart.py) and providers' server-sent events (routing/upstream.py).

Properties: any input, split anywhere, ends in a result or the parser's documented error
(MultipartError, ProviderError), never another exception; the result does not depend on
where the input was split; well-formed input round-trips. Each example has a deadline, so a
superlinear path shows up as a failure, not as a slow suite."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conduit_tornado.routing.upstream import ProviderError, sse_events
from conduit_tornado.server.multipart import (
    MultipartError,
    MultipartParser,
    Part,
    boundary_of,
    header_params,
)

FUZZ = settings(
    max_examples=150,
    deadline=1000,  # ms per example, for inputs of a few KB: generous on a busy machine
    suppress_health_check=[HealthCheck.too_slow],
    database=None,  # no files written by the suite; failures print their example
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for p in [*points, len(data)]:
        pieces.append(data[start:p])
        start = p
    return pieces


# -- multipart ------------------------------------------------------------------------------

BOUNDARY = b"XyZ-boundary-42"


def parse(pieces: list[bytes], boundary: bytes = BOUNDARY) -> dict[str, tuple[Any, ...]] | str:
    """The parts as plain values, or the error's message."""
    parser = MultipartParser(boundary, max_field_bytes=1024, max_parts=8, spool_bytes=256)
    try:
        for piece in pieces:
            parser.feed(piece)
        parts = parser.close()
    except MultipartError as exc:
        parser.discard()
        return f"error: {exc}"
    try:
        return {name: _plain(part) for name, part in parts.items()}
    finally:
        parser.discard()


def _plain(part: Part) -> tuple[Any, ...]:
    content = part.file.read() if part.file is not None else bytes(part.data)
    return part.filename, part.content_type, content, part.size


# Bytes that often matter to the parser, mixed with arbitrary ones.
TOKENS = st.sampled_from(
    [
        *(b"--", b"\r\n", b"\r\n\r\n", b'"', b";", b":"),
        *(b"--" + BOUNDARY, b"\r\n--" + BOUNDARY),
        *(b"Content-Disposition: form-data; name=", b'name="file"; filename="a.wav"'),
    ]
)
NOISE = st.lists(st.one_of(TOKENS, st.binary(max_size=12)), max_size=40).map(b"".join)
CUTS = st.lists(st.integers(min_value=0, max_value=4096), max_size=6)


@FUZZ
@given(NOISE, CUTS)
def test_multipart_any_bytes_any_split_same_outcome(data: bytes, cuts: list[int]) -> None:
    whole = parse([data])
    assert parse(split(data, cuts)) == whole
    assert parse([bytes([b]) for b in data]) == whole


NAMES = st.text(
    st.characters(codec="latin-1", exclude_characters="\r\n\x00"), min_size=1, max_size=12
)
VALUES = st.binary(max_size=300).filter(lambda v: b"\r\n--" + BOUNDARY not in v)


def _quoted(text: str) -> bytes:
    return b'"' + text.replace("\\", "\\\\").replace('"', '\\"').encode("latin-1") + b'"'


def encode(fields: dict[str, bytes], file: tuple[str, bytes] | None) -> bytes:
    out = b"preamble is ignored\r\n"
    for name, value in fields.items():
        out += b"--" + BOUNDARY + b"\r\n"
        out += b"Content-Disposition: form-data; name=" + _quoted(name) + b"\r\n\r\n"
        out += value + b"\r\n"
    if file is not None:
        filename, content = file
        out += b"--" + BOUNDARY + b"\r\n"
        out += b"Content-Disposition: form-data; name=file; filename=" + _quoted(filename)
        out += b"\r\nContent-Type: audio/wav\r\n\r\n" + content + b"\r\n"
    return out + b"--" + BOUNDARY + b"--\r\n"


@FUZZ
@given(
    st.dictionaries(NAMES.filter(lambda n: n != "file"), VALUES, max_size=4),
    st.none() | st.tuples(NAMES, VALUES),
    CUTS,
)
def test_multipart_round_trip(
    fields: dict[str, bytes], file: tuple[str, bytes] | None, cuts: list[int]
) -> None:
    got = parse(split(encode(fields, file), cuts))
    expected = {name: (None, None, value, len(value)) for name, value in fields.items()}
    if file is not None:
        expected["file"] = (file[0], "audio/wav", file[1], len(file[1]))
    assert got == expected


@FUZZ
@given(st.text(max_size=60), st.text(st.characters(exclude_characters="\r\n"), max_size=40))
def test_header_params_only_raise_multipart_errors_and_round_trip(noise: str, value: str) -> None:
    try:
        header_params(noise)
        boundary_of(noise)
    except MultipartError:
        pass
    quoted = value.replace("\\", "\\\\").replace('"', '\\"')
    kind, params = header_params(f'form-data; name="{quoted}"; other=x')
    assert (kind, params) == ("form-data", {"name": value, "other": "x"})


# -- server-sent events ---------------------------------------------------------------------


class Body:
    """The HTTP client's response as the SSE reader uses it: ``next_chunk()`` only."""

    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = [p for p in pieces if p]

    async def next_chunk(self) -> bytes | None:
        return self._pieces.pop(0) if self._pieces else None


def events(pieces: list[bytes]) -> list[tuple[str, bytes]] | str:
    async def read() -> list[tuple[str, bytes]]:
        body: Any = Body(pieces)
        return [event async for event in sse_events(body)]

    try:
        return asyncio.run(read())
    except ProviderError as exc:
        return f"error: {exc.kind}"


SSE_TOKENS = st.sampled_from(
    [b"\n", b"\r\n", b"\r", b"\n\n", b":", b": ", b"data:", b"data: ", b"event: ", b"x", b"{}"]
)
SSE_NOISE = st.lists(st.one_of(SSE_TOKENS, st.binary(max_size=8)), max_size=40).map(b"".join)


@FUZZ
@given(SSE_NOISE, CUTS)
def test_sse_any_bytes_any_split_same_events(data: bytes, cuts: list[int]) -> None:
    whole = events([data])
    assert events(split(data, cuts)) == whole
    if len(data) < 80:
        assert events([bytes([b]) for b in data]) == whole


LINE = st.binary(max_size=20).filter(lambda b: b"\n" not in b and b"\r" not in b)
EVENT_NAME = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=":"), max_size=12
)


@FUZZ
@given(
    st.lists(st.tuples(EVENT_NAME, st.lists(LINE, min_size=1, max_size=3)), max_size=6),
    st.sampled_from([b"\n", b"\r\n"]),
    CUTS,
)
def test_sse_round_trip(
    sent: list[tuple[str, list[bytes]]], newline: bytes, cuts: list[int]
) -> None:
    stream = b": keepalive" + newline + newline
    for name, lines in sent:
        if name:
            stream += b"event: " + name.encode() + newline
        stream += b"".join(b"data: " + line + newline for line in lines) + newline
    expected = [(name or "message", b"\n".join(lines)) for name, lines in sent]
    assert events(split(stream, cuts)) == expected
