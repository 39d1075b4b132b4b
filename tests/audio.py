"""Real audio files built in the tests (no fixtures on disk)."""

from __future__ import annotations

import io
import wave


def wav_bytes(seconds: float, rate: int = 16000, sample: bytes = b"\x00\x00") -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(sample * int(seconds * rate))
    return out.getvalue()
