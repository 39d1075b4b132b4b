"""What the gateway is doing right now: requests being served, the background work they
started, and runs that outlive their request (background responses). A graceful stop
waits for the first two and stops the runs; the metrics report the requests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any


class InFlight:
    def __init__(self) -> None:
        self.requests = 0
        self._drained: asyncio.Event | None = None
        self._background: set[asyncio.Task[None]] = set()
        #: Runs by name; a run's own code records how it ended, cancelled or not.
        self.runs: dict[str, asyncio.Task[None]] = {}

    def request_started(self) -> None:
        self.requests += 1

    def request_ended(self) -> None:
        self.requests -= 1
        if self.requests == 0 and self._drained is not None:
            self._drained.set()

    async def drain(self, within: float) -> None:
        """Wait until no request is being served, or within seconds have passed."""
        if self.requests > 0:
            self._drained = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), within)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run work after a response (settling limits): kept referenced, awaited at stop."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @property
    def background(self) -> int:
        return len(self._background)

    async def settle(self) -> None:
        """Wait for the background work started so far, and what it starts in turn."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    def start_run(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        """Run work that outlives its request, until it ends or is cancelled."""
        task = asyncio.ensure_future(work)
        self.runs[name] = task
        task.add_done_callback(lambda _: self.runs.pop(name, None))

    async def stop_runs(self) -> None:
        """Cancel every run and wait for each to record that it stopped."""
        tasks = list(self.runs.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
