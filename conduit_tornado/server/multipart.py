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
_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_DISPOSITION = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"|(\w+)=([^;\s]+)')


class MultipartError(ValueError):
    pass


def boundary_of(content_type: str) -> bytes:
    if not content_type.lower().startswith("multipart/form-data"):
        raise MultipartError("the request must be multipart/form-data")
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise MultipartError("the multipart boundary is missing")
    boundary = match.group(1) or match.group(2)
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
            at = buf.find(self._opening)
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
            at = buf.find(b"\r\n\r\n")
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

    def _start_part(self, block: bytes) -> None:
        if len(self.parts) >= self._max_parts:
            raise MultipartError("too many multipart parts")
        headers: dict[str, str] = {}
        for line in block.decode("latin-1").split("\r\n"):
            name, sep, value = line.partition(":")
            if not sep:
                raise MultipartError("malformed multipart part header")
            headers[name.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        if not disposition.lower().startswith("form-data"):
            raise MultipartError("each multipart part needs Content-Disposition: form-data")
        params: dict[str, str] = {}
        for m in _DISPOSITION.finditer(disposition):
            if m.group(1):
                params[m.group(1).lower()] = m.group(2).replace('\\"', '"')
            else:
                params[m.group(3).lower()] = m.group(4)
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
