"""CPU of each piece a Responses request adds to chat's work, one piece at a time in this
process (``time.process_time``, median of 5 rounds): the translation to chat and back, the
Response object and its encoding, the stored document and its insert into the memory
store, and a 20-chunk stream's frames against the chat relay's encoding of the same chunks.

    .venv/bin/python bench/responses_pieces.py

Hot in cache and without the handler's glue, so the pieces sum to less than what the route
adds end to end (bench/run.py, bench/instructions.py --responses).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import itertools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def cpu(fn: Callable[[], Any], count: int) -> float:
    """µs of CPU per call, median of 5 rounds after a warm-up."""
    for _ in range(300):
        fn()
    rounds = []
    for _ in range(5):
        started = time.process_time()
        for _ in range(count):
            fn()
        rounds.append((time.process_time() - started) / count * 1e6)
    return statistics.median(rounds)


def main() -> int:
    from conduit_tornado.api import responses as route
    from conduit_tornado.api import responses_stored as stored
    from conduit_tornado.api.base import dumps
    from conduit_tornado.core.clock import Clock
    from conduit_tornado.formats import responses as fr
    from conduit_tornado.formats import responses_events as fe
    from conduit_tornado.formats import responses_output as fo
    from conduit_tornado.routing.providers.base import Usage
    from conduit_tornado.store.memory import MemoryStore
    from conduit_tornado.store.metered import metered

    paths = importlib.import_module("paths")
    answer = orjson.loads(importlib.import_module("upstream").ANSWER)
    body = {"model": "bench", "input": "Say hello to the benchmark.", "max_output_tokens": 16}
    streamed = {"model": "bench", "stream": True, "max_output_tokens": 32, "input": "Stream."}
    chunks = [orjson.loads(p[6:-2]) for p in paths.stream_pieces() if p.startswith(b"data: {")]
    usage = Usage(12, 7)
    clock = Clock()
    store = metered(MemoryStore())
    turn = fr.to_chat(body, [])
    output, status, incomplete = fo.output_of(answer)

    def respond() -> dict[str, Any]:
        return fo.response_object(
            body,
            response_id="resp_x",
            model="bench",
            created_at=1,
            status=status,
            output=output,
            usage=usage,
            incomplete=incomplete,
        )

    response = respond()
    encoded = dumps(response)
    ids = itertools.count()

    def insert() -> None:
        doc = {"_id": f"r{next(ids)}", "key": "k", "created_at": 0, "response": "x"}
        # The memory store's insert never waits: run its coroutine to its end here.
        coroutine = store.insert("responses", doc)
        with contextlib.suppress(StopIteration):
            coroutine.send(None)

    def translated_stream() -> None:
        events = fe.EventStream(streamed, "resp_x", "bench", 1)
        events.start_frames()
        for chunk in chunks:
            events.batch_frames([chunk])
        events.finish_frames(Usage(12, 20))

    def relayed_stream() -> None:
        # What ProxyHandler.relay does with each chunk of the same stream.
        for original in chunks:
            chunk = dict(original)
            if chunk.get("usage") and not chunk.get("choices"):
                continue
            chunk.pop("usage", None)
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta")
                _ = delta.get("content") if delta else None
            chunk["model"] = "bench"
            _ = b"data: " + orjson.dumps(chunk) + b"\n\n"

    for _ in range(12_000):  # the store full, dropping its oldest per insert
        insert()
    pieces: list[tuple[str, Callable[[], Any], int]] = [
        (
            "checks, no history to read",
            lambda: (route.ResponsesHandler._check(body), stored.Prior()),
            20_000,
        ),
        ("to_chat (input items, chat body)", lambda: fr.to_chat(body, []), 20_000),
        ("output_of (chat answer to output items)", lambda: fo.output_of(answer), 20_000),
        ("response_object", respond, 20_000),
        ("new_id", lambda: fr.new_id("resp"), 20_000),
        ("encoding the Response", lambda: dumps(response), 20_000),
        ("  chat: encoding its answer", lambda: dumps(answer), 20_000),
        (
            "stored document (the Response, its items)",
            lambda: {
                "created_at": clock.now(),
                "response": encoded.decode(),
                "items": stored.packed(turn.items),
            },
            20_000,
        ),
        ("store.insert (metered memory store, full)", insert, 20_000),
        ("20-chunk stream: Responses frames", translated_stream, 3_000),
        ("  chat: the relay's encoding of the same chunks", relayed_stream, 3_000),
    ]
    print("| piece | CPU µs |\n|---|---:|")
    for name, fn, count in pieces:
        print(f"| {name} | {cpu(fn, count):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    asyncio.set_event_loop(asyncio.new_event_loop())  # the store's pieces need none running
    sys.exit(main())
