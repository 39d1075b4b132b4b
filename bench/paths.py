"""CPU of the gateway's per-request Python paths on their own, with no network: what the
upstream and relay code does with a 20-chunk chat stream (22 SSE events, one per body
read, as pyreqwest hands them on), what a Responses stream adds (the translation to
Responses events and their named SSE frames), and building one pyreqwest request. With
--baseline DIR the same paths of another source tree (e.g. ``git archive <commit> | tar
-x -C DIR``) run alternately in this process, so both see the same machine: on a shared,
loaded machine the end-to-end rows of run.py move by more than these paths change.

    .venv/bin/python bench/paths.py [--baseline DIR] [--rounds 7] [--repeat 2000]

CPU is ``time.process_time`` per stream (or per request built), median of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent


def _bench_upstream() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_upstream", HERE / "upstream.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stream_pieces() -> list[bytes]:
    """The body reads of bench/upstream.py's stream: one SSE event per HTTP chunk."""
    body, pieces, at = _bench_upstream()._stream_body(), [], 0
    while True:
        end = body.index(b"\r\n", at)
        size = int(body[at:end], 16)
        if size == 0:
            return pieces
        pieces.append(body[end + 2 : end + 2 + size])
        at = end + 2 + size + 2


class Piece(bytes):
    """Stands in for pyreqwest's Bytes (the reader calls to_bytes())."""

    def to_bytes(self) -> bytes:
        return bytes(self)


def load_tree(tree: Path) -> dict[str, ModuleType]:
    """The modules these paths use, imported from ``tree`` (and only from it)."""
    for name in [m for m in sys.modules if m.split(".")[0] == "conduit_tornado"]:
        del sys.modules[name]
    # Each tree's core/meters.py registers its metrics with prometheus_client's global
    # registry on import: a second tree's would be refused as duplicates.
    import prometheus_client

    registry = prometheus_client.REGISTRY
    for collector in list(registry._collector_to_names):  # no public listing
        registry.unregister(collector)
    sys.path.insert(0, str(tree))
    try:
        names = {
            "upstream": "conduit_tornado.routing.upstream",
            "openai": "conduit_tornado.routing.providers.openai",
            "responses": "conduit_tornado.formats.responses",
            "proxy": "conduit_tornado.api.proxy",
            "base": "conduit_tornado.routing.providers.base",
            "settings": "conduit_tornado.core.settings",
            "clients": "conduit_tornado.routing.clients",
        }
        mods = {key: importlib.import_module(name) for key, name in names.items()}
        # A tree may keep the Response and its stream in modules of their own (or not).
        for key in ("responses_output", "responses_events"):
            if importlib.util.find_spec(f"conduit_tornado.formats.{key}") is not None:
                mods[key] = importlib.import_module(f"conduit_tornado.formats.{key}")
        return mods
    finally:
        sys.path.remove(str(tree))


def paths(mods: dict[str, ModuleType], pieces: list[Piece]) -> dict[str, Callable[[int], Any]]:
    upstream, openai, responses, proxy = (
        mods["upstream"],
        mods["openai"],
        mods["responses"],
        mods["proxy"],
    )
    import orjson

    class Reader:
        def __init__(self) -> None:
            self.at = 0

        async def read_chunk(self) -> Piece | None:
            if self.at == len(pieces):
                return None
            self.at += 1
            return pieces[self.at - 1]

    def answer() -> Any:
        # An upstream.Response over the fake reader (its constructor wants pyreqwest's).
        response = object.__new__(upstream.Response)
        response._reader, response._left, response._unread = Reader(), 1 << 30, -1
        response._ended = response._closed = False
        return response

    async def chat_streams(count: int) -> None:
        for _ in range(count):
            chunks = openai._Chunks(answer())
            while (batch := await chunks.next_batch()) is not None:
                for chunk in batch:
                    chunk["model"] = "bench"
                    orjson.dumps(chunk)

    body = {"model": "bench", "input": "Stream twenty tokens.", "max_output_tokens": 32}
    usage = mods["base"].Usage(12, 20)
    chat_chunks = [orjson.loads(piece[6:-2]) for piece in pieces if piece.startswith(b"data: {")]
    output = mods.get("responses_output", responses)
    streamed = mods.get("responses_events", responses)

    def responses_streams(count: int) -> None:
        # As api/responses.py translates: encoded frames where the tree has them.
        framed = hasattr(streamed.EventStream, "batch_frames")
        for _ in range(count):
            events = streamed.EventStream(body, "resp_bench", "bench", 1700000000)
            seen: dict[str, Any] = {"usage": None, "reported": None, "chars": 0, "final": None}
            if framed:
                events.start_frames()
                for chunk in chat_chunks:
                    events.batch_frames([chunk])  # one event per read, as upstream sends
                events.finish_frames(usage)
                continue
            proxy.named_events(events.start())
            for chunk in chat_chunks:
                proxy.note_chunk(seen, chunk)
                out = events.feed(chunk)
                if out:
                    proxy.named_events(out)
            proxy.named_events(events.finish(usage))

    chat_answer = orjson.loads(_bench_upstream().ANSWER)
    whole = {"model": "bench", "input": "Say hello to the benchmark.", "max_output_tokens": 16}

    def responses_whole(count: int) -> None:
        # A non-streamed Response's own work: the request to chat, the answer to a
        # Response, and the parts a stored Response keeps, encoded.
        for _ in range(count):
            turn = responses.to_chat(whole, [])
            items, status, incomplete = output.output_of(chat_answer)
            response = output.response_object(
                whole,
                response_id=responses.new_id("resp"),
                model="bench",
                created_at=1700000000,
                status=status,
                output=items,
                usage=usage,
                incomplete=incomplete,
            )
            orjson.dumps(response)
            orjson.dumps(turn.items)
            if not hasattr(output, "replayed"):  # earlier trees kept the chat copy too
                orjson.dumps(turn.messages + output.as_messages(items))

    settings = mods["settings"].Settings()
    client = mods["clients"].ClientFactory(settings).client(connect_timeout=5.0)
    build = getattr(upstream, "_parsed_url", None)
    deadline_of = getattr(upstream, "_deadline", lambda seconds: timedelta(seconds=seconds))

    def requests(count: int) -> None:
        # Upstream.request's work before anything is sent, as each tree does it.
        url = "http://127.0.0.1:9/v1/chat/completions"
        headers = {"Authorization": "Bearer sk-bench"}
        payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
        for _ in range(count):
            hdrs = dict(headers)
            hdrs["Via"] = "1.1 conduit-bench"
            upstream.check_headers(hdrs)
            target = build(url) if build is not None else url
            deadline = deadline_of(600.0)
            builder = client.request("POST", target).body_bytes(orjson.dumps(payload))
            hdrs["Content-Type"] = "application/json"
            builder.headers(hdrs).timeout(deadline).streamed_read_buffer_limit(
                upstream.READ_BUFFER
            ).build_streamed()

    return {
        "chat stream, parsed (22 events)": lambda n: asyncio.run(chat_streams(n)),
        "Responses stream, translated (20 chunks)": responses_streams,
        "Responses, whole (translated and encoded)": responses_whole,
        "request built (before sending)": requests,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="another source tree to compare with")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    pieces = [Piece(p) for p in stream_pieces()]
    trees = [("this tree", ROOT)]
    if args.baseline is not None:
        trees.insert(0, (f"baseline ({args.baseline.name})", args.baseline.resolve()))
    runs = {label: paths(load_tree(tree), pieces) for label, tree in trees}
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for label, measured in runs.items():
            for name, run in measured.items():
                count = args.repeat if "request" not in name else args.repeat * 5
                started = time.process_time()
                run(count)
                cpu = (time.process_time() - started) / count * 1e6
                results.setdefault((name, label), []).append(cpu)
    print("| path | " + " | ".join(f"{label}, CPU µs" for label, _ in trees) + " |")
    print("|---|" + "---:|" * len(trees))
    for name in next(iter(runs.values())):
        cells = [statistics.median(results[(name, label)]) for label, _ in trees]
        change = f" ({cells[-1] / cells[0] - 1:+.0%})" if len(cells) > 1 else ""
        print(f"| {name} | " + " | ".join(f"{c:.1f}" for c in cells) + change + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
