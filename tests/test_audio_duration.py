"""Durations read from real audio headers (files built here, not fixtures)."""

from __future__ import annotations

import io
import struct

import pytest

from conduit_tornado.metering.audio_duration import duration_seconds
from tests.audio import wav_bytes


def flac_header(seconds: float, rate: int = 44100) -> bytes:
    total = int(seconds * rate)
    info = bytearray(34)
    info[10] = (rate >> 12) & 0xFF
    info[11] = (rate >> 4) & 0xFF
    info[12] = ((rate & 0x0F) << 4) | 0x02  # channels-1 and bits, irrelevant here
    info[13] = (total >> 32) & 0x0F
    info[14:18] = struct.pack(">I", total & 0xFFFFFFFF)
    return b"fLaC" + b"\x80\x00\x00\x22" + bytes(info)


def mp3_bytes(seconds: float, kbps: int = 128) -> bytes:
    frame = b"\xff\xfb\x90\x00"  # MPEG-1 Layer III, 128 kbit/s, 44.1 kHz
    return frame + b"\x00" * (int(seconds * kbps * 1000 / 8) - 4)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (wav_bytes(2.5), 2.5),
        (wav_bytes(61, rate=8000), 61.0),
        (flac_header(90.0), 90.0),
        (mp3_bytes(12.0), 12.0),
    ],
)
def test_durations(data: bytes, expected: float) -> None:
    assert duration_seconds(io.BytesIO(data), len(data)) == pytest.approx(expected, rel=1e-3)


def test_unknown_formats_give_none() -> None:
    junk = b"not audio at all" * 100
    assert duration_seconds(io.BytesIO(junk), len(junk)) is None
