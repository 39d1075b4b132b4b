"""Audio duration from a file's header, to price transcription per minute when the
provider does not report a duration. WAV and FLAC are exact; MP3 assumes a constant
bitrate from its first frame; Ogg (Opus/Vorbis) reads the last page's granule position."""

from __future__ import annotations

import struct
from typing import IO

_MP3_BITRATES = {  # MPEG-1 Layer III, kbit/s by index
    1: 32,
    2: 40,
    3: 48,
    4: 56,
    5: 64,
    6: 80,
    7: 96,
    8: 112,
    9: 128,
    10: 160,
    11: 192,
    12: 224,
    13: 256,
    14: 320,
}
_MP3_V2_BITRATES = {  # MPEG-2/2.5 Layer III
    1: 8,
    2: 16,
    3: 24,
    4: 32,
    5: 40,
    6: 48,
    7: 56,
    8: 64,
    9: 80,
    10: 96,
    11: 112,
    12: 128,
    13: 144,
    14: 160,
}


def duration_seconds(file: IO[bytes], size: int) -> float | None:
    file.seek(0)
    head = file.read(64 * 1024)
    try:
        if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
            return _wav(head, size)
        if head[:4] == b"fLaC":
            return _flac(head)
        if head[:4] == b"OggS":
            return _ogg(file, size, head)
        return _mp3(head, size)
    except (struct.error, ZeroDivisionError, IndexError):
        return None
    finally:
        file.seek(0)


def _wav(head: bytes, size: int) -> float | None:
    pos = 12
    byte_rate = 0
    while pos + 8 <= len(head):
        chunk, length = head[pos : pos + 4], struct.unpack("<I", head[pos + 4 : pos + 8])[0]
        if chunk == b"fmt ":
            byte_rate = struct.unpack("<I", head[pos + 16 : pos + 20])[0]
        elif chunk == b"data":
            data = min(length, size - pos - 8)  # streaming writers put 0 or 0xFFFFFFFF here
            if length in (0, 0xFFFFFFFF):
                data = size - pos - 8
            return data / byte_rate if byte_rate else None
        pos += 8 + length + (length & 1)
    return None


def _flac(head: bytes) -> float | None:
    info = head[8:26]  # STREAMINFO follows the 4-byte block header
    rate = (info[10] << 12) | (info[11] << 4) | (info[12] >> 4)
    total = ((info[13] & 0x0F) << 32) | struct.unpack(">I", info[14:18])[0]
    return total / rate if rate and total else None


def _ogg(file: IO[bytes], size: int, head: bytes) -> float | None:
    rate = 48000 if b"OpusHead" in head[:128] else None
    if rate is None and b"\x01vorbis" in head[:128]:
        at = head.index(b"\x01vorbis")
        rate = struct.unpack("<I", head[at + 12 : at + 16])[0]
    if not rate:
        return None
    file.seek(max(0, size - 65536))
    tail = file.read()
    last = tail.rfind(b"OggS")
    if last < 0:
        return None
    granule: int = struct.unpack("<q", tail[last + 6 : last + 14])[0]
    skip = (
        struct.unpack("<H", head[head.index(b"OpusHead") + 10 :][:2])[0]
        if b"OpusHead" in head
        else 0
    )
    return max(0, granule - skip) / rate


def _mp3(head: bytes, size: int) -> float | None:
    start = 0
    if head[:3] == b"ID3":  # skip an ID3v2 tag: its size is a 28-bit syncsafe integer
        b = head[6:10]
        start = 10 + ((b[0] << 21) | (b[1] << 14) | (b[2] << 7) | b[3])
    for pos in range(start, min(len(head) - 4, start + 4096)):
        if head[pos] == 0xFF and head[pos + 1] & 0xE0 == 0xE0:
            version = (head[pos + 1] >> 3) & 0x03  # 3 = MPEG-1
            layer = (head[pos + 1] >> 1) & 0x03  # 1 = Layer III
            index = head[pos + 2] >> 4
            table = _MP3_BITRATES if version == 3 else _MP3_V2_BITRATES
            if layer == 1 and index in table:
                return (size - start) * 8 / (table[index] * 1000)
    return None
