"""An incremental multipart/form-data parser for uploads (audio files).

Fed chunk by chunk as the body arrives: text fields are kept (bounded), the file part is
spooled to a temporary file, so a 25 MB upload is never held whole in memory. The work is
linear in the input and bounded per part, so hostile bodies (huge boundaries, endless
headers, no terminator) are refused quickly instead of slowing the process.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from typing import IO

MAX_BOUNDARY = 70  # RFC 2046
MAX_HEADER_BLOCK = 16 * 1024
# One character class, matched from a given position: it cannot backtrack.
_QUOTED_RUN = re.compile(r'[^"\\]*')


class MultipartError(ValueError):
    pass


def header_params(value: str) -> tuple[str, dict[str, str]]:
    """``type; name=value; name="quoted \\" value"`` as (type, {name: value}), names in
    lower case, the first of a repeated name kept. A hand parser that moves forward only,
    with str.find and one class-only regex: linear in the header, whatever it holds (a
    regex that retries at every position is quadratic on long unbroken words)."""
    end = value.find(";")
    if end < 0:
        return value.strip(), {}
    kind = value[:end].strip()
    params: dict[str, str] = {}
    at, n = end + 1, len(value)
    while at < n:
        stop = value.find(";", at)
        equals = value.find("=", at)
        if equals < 0 or 0 <= stop < equals:  # a parameter without a value: skip it
            at = n if stop < 0 else stop + 1
            continue
        name = value[at:equals].strip().lower()
        at = equals + 1
        while at < n and value[at] in " \t":
            at += 1
        if at < n and value[at] == '"':
            pieces: list[str] = []
            at += 1
            while True:
                run = _QUOTED_RUN.match(value, at)
                assert run is not None  # the class matches the empty string too
                pieces.append(run.group())
                at = run.end()
                if at >= n:
                    raise MultipartError("an unterminated quoted string in a part header")
                if value[at] == '"':
                    at += 1
                    break
                if at + 1 < n:  # a backslash: the next character stands for itself
                    pieces.append(value[at + 1])
                at += 2
            text = "".join(pieces)
            stop = value.find(";", at)
        else:
            text = value[at : n if stop < 0 else stop].strip()
        params.setdefault(name, text)
        at = n if stop < 0 else stop + 1
    return kind, params


def boundary_of(content_type: str) -> bytes:
    kind, params = header_params(content_type)
    if kind.lower() != "multipart/form-data":
        raise MultipartError("the request must be multipart/form-data")
    boundary = params.get("boundary")
    if boundary is None:
        raise MultipartError("the multipart boundary is missing")
    if not 1 <= len(boundary) <= MAX_BOUNDARY:
        raise MultipartError(f"the multipart boundary must be 1 to {MAX_BOUNDARY} characters")
    return boundary.encode("latin-1")


@dataclass
class Part:
    name: str
    filename: str | None
    content_type: str | None
    data: bytearray = field(default_factory=bytearray)
    file: IO[bytes] | None = None
    size: int = 0

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


class MultipartParser:
    def __init__(
        self,
        boundary: bytes,
        *,
        file_fields: frozenset[str] = frozenset({"file"}),
        max_field_bytes: int = 64 * 1024,
        max_parts: int = 64,
        spool_bytes: int = 1024 * 1024,
    ) -> None:
        self._opening = b"--" + boundary
        self._delimiter = b"\r\n--" + boundary
        self._file_fields = file_fields
        self._max_field = max_field_bytes
        self._max_parts = max_parts
        self._spool = spool_bytes
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf already searched for what the state waits for
        self._state = "preamble"
        self._part: Part | None = None
        self.parts: list[Part] = []

    def feed(self, chunk: bytes) -> None:
        self._buf += chunk
        while self._step():
            pass

    def _step(self) -> bool:
        """Advance one state; return False when more input is needed."""
        buf = self._buf
        if self._state == "preamble":
            at = self._find(self._opening)
            if at < 0:
                if len(buf) > MAX_HEADER_BLOCK:
                    raise MultipartError("no multipart boundary found")
                return False
            del buf[: at + len(self._opening)]
            self._state = "after_boundary"
            return True
        if self._state == "after_boundary":
            if len(buf) < 2:
                return False
            if buf[:2] == b"--":
                self._state = "end"
                buf.clear()
                return False
            if buf[:2] != b"\r\n":
                raise MultipartError("malformed multipart boundary line")
            del buf[:2]
            self._state = "headers"
            return True
        if self._state == "headers":
            at = self._find(b"\r\n\r\n")
            if at < 0:
                if len(buf) > MAX_HEADER_BLOCK:
                    raise MultipartError("multipart part headers are too long")
                return False
            self._start_part(bytes(buf[:at]))
            del buf[: at + 4]
            self._state = "body"
            return True
        if self._state == "body":
            at = buf.find(self._delimiter)
            if at < 0:
                # Keep a tail that might hold the start of a delimiter split across chunks.
                safe = len(buf) - len(self._delimiter)
                if safe > 0:
                    self._write(bytes(buf[:safe]))
                    del buf[:safe]
                return False
            self._write(bytes(buf[:at]))
            del buf[: at + len(self._delimiter)]
            self._finish_part()
            self._state = "after_boundary"
            return True
        if buf.strip():  # anything after the closing boundary but whitespace
            buf.clear()
        return False

    def _find(self, needle: bytes) -> int:
        """Find needle in the buffer, resuming where the last search left off: a head
        sent a byte at a time is searched once, not once per byte."""
        buf = self._buf
        at = buf.find(needle, self._scanned)
        # Next time, start where a needle cut short at the end could begin.
        self._scanned = 0 if at >= 0 else max(0, len(buf) - len(needle) + 1)
        return at

    def _start_part(self, block: bytes) -> None:
        if len(self.parts) >= self._max_parts:
            raise MultipartError("too many multipart parts")
        headers: dict[str, str] = {}
        for line in block.decode("latin-1").split("\r\n"):
            name, sep, value = line.partition(":")
            if not sep:
                raise MultipartError("malformed multipart part header")
            headers[name.strip().lower()] = value.strip()
        kind, params = header_params(headers.get("content-disposition", ""))
        if kind.lower() != "form-data":
            raise MultipartError("each multipart part needs Content-Disposition: form-data")
        if "name" not in params:
            raise MultipartError("a multipart part has no name")
        part = Part(params["name"], params.get("filename"), headers.get("content-type"))
        if part.name in self._file_fields:
            part.file = tempfile.SpooledTemporaryFile(max_size=self._spool)  # noqa: SIM115
        self._part = part

    def _write(self, data: bytes) -> None:
        part = self._part
        assert part is not None
        part.size += len(data)
        if part.file is not None:
            part.file.write(data)
        elif part.size > self._max_field:
            raise MultipartError(f"the multipart field {part.name!r} is too large")
        else:
            part.data += data

    def _finish_part(self) -> None:
        assert self._part is not None
        if self._part.file is not None:
            self._part.file.seek(0)
        self.parts.append(self._part)
        self._part = None

    def close(self) -> dict[str, Part]:
        if self._state != "end":
            self.discard()
            raise MultipartError("the multipart body ended before its closing boundary")
        return {p.name: p for p in self.parts}

    def discard(self) -> None:
        for part in [*self.parts, *([self._part] if self._part else [])]:
            if part.file is not None:
                part.file.close()
