"""asyncio's write flow control as a future, for our HTTP protocols (server and client)."""

from __future__ import annotations

import asyncio


class WriteFlow(asyncio.Protocol):
    """``_write_ready`` is a pending future while the transport's buffer is above its
    high-water mark, and None while writes may go on."""

    _write_ready: asyncio.Future[None] | None = None

    def pause_writing(self) -> None:
        self._write_ready = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_result(None)
        self._write_ready = None
