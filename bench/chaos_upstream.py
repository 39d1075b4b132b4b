"""The fake OpenAI upstream of bench/chaos.py: chat completions (plain and streamed) and
embeddings on loopback, with faults injected on purpose, and a ledger of exactly what it
served.

    python bench/chaos_upstream.py PORT SEED

Each request carries a marker the load driver wrote into its prompt (or embeddings input):
``[chaos id=<request id> fault=<fault>]``. The fault applies to the first attempt of that
id only, so the gateway's retry can succeed; ``hold`` and ``big`` (client-side plans) apply
to every attempt. Faults:

- ``reset_head``: the request is read, then the connection is reset (RST) before any byte.
- ``reset_mid``: half an answer (the head and half the body, or three stream events), then RST.
- ``drip``: the answer in small pieces over ~2 s (a slow but healthy upstream).
- ``hang``: nothing is sent until the gateway gives up (its first-byte timeout) and closes
  the connection, or 10 s; then a reset. How each hang ended is counted: a gateway that
  gives up on an attempt but leaves its connection open shows as ``hang_timeout``.
- ``gzip_bomb``: ``Content-Encoding: gzip``, a ~130 kB body that inflates to 128 MiB.
- ``error500`` / ``bad_json``: a 500, or a 200 whose body is not JSON.
- ``hold``: a stream sends three events then waits until the gateway closes the connection
  (its client left), at most 20 s; a plain answer waits the same way, at most 1 s. Either
  then answers in full, as if nothing happened: a gateway that keeps a dead client's call
  open shows up in the reconciliation.
- ``big``: a 2,000-event stream of ~1 kB events, ~2 MB, for slow readers. (Loopback socket
  buffers grow to tens of MB, so this upstream is never held back: what is checked is that
  the gateway's own memory does not take the difference.)

On top of that, seeded storms: 3-second windows (one in each 30 s, the first after ~10 s)
during which every call is answered 429 or 503 with ``Retry-After: 1``.

"Served" means the whole answer, with its usage, was written and drained to the socket:
only those count in the ledger (``GET /__chaos/ledger``), keyed by request id with the
prompt and completion tokens the usage reported.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import struct
import sys
import time
import zlib
from collections import Counter
from typing import Any

API_KEY = "sk-chaos-upstream"
MARKER = re.compile(rb"\[chaos id=([A-Za-z0-9._:-]+) fault=([a-z0-9_]+)\]")
STORM_LENGTH = 3.0
STORM_PERIOD = 30.0
HOLD_STREAM = 20.0
HOLD_PLAIN = 1.0  # well below the deployment's first-byte timeout (3 s in bench/chaos.py)
HANG_MAX = 10.0
BOMB_INFLATED = 128 * 1024 * 1024
MAX_REQUESTS_PER_CONNECTION = 1_000_000  # a bound on every loop, however generous


def _bomb() -> bytes:
    """A gzip member of BOMB_INFLATED zero bytes, built in pieces (never held inflated)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: gzip framing
    block = b"\0" * (1024 * 1024)
    out = [z.compress(block) for _ in range(BOMB_INFLATED // len(block))]
    out.append(z.flush())
    return b"".join(out)


def tokens_for(rid: str, salt: int) -> int:
    """A deterministic, id-dependent token count, so mismatches are not all alike."""
    return 5 + zlib.crc32(f"{rid}/{salt}".encode()) % 60


class Fake:
    def __init__(self, seed: int) -> None:
        self.started = time.monotonic()
        rng = random.Random(seed)
        self.storms = [
            (start, start + STORM_LENGTH, 429 if k % 2 == 0 else 503)
            for k in range(200)
            for start in [10.0 + STORM_PERIOD * k + rng.uniform(0, STORM_PERIOD - 10)]
        ]
        self.bomb = _bomb()
        self.attempts: Counter[str] = Counter()
        self.served: dict[str, dict[str, Any]] = {}
        self.duplicates: list[str] = []  # ids served twice (would mean a double upstream call)
        self.faults: Counter[str] = Counter()  # fault applied -> attempts
        self.storm_answers: Counter[int] = Counter()
        self.holds: Counter[str] = Counter()  # how each hold ended: closed / timeout
        self.unmarked = 0
        self.timeline: dict[str, list[str]] = {}  # id -> "t+s what" per attempt event
        self.unauthorized = 0

    def storm(self) -> int | None:
        now = time.monotonic() - self.started
        for start, end, status in self.storms:
            if start <= now < end:
                return status
            if start > now:
                return None
        return None

    def ledger(self) -> dict[str, Any]:
        return {
            "served": self.served,
            "duplicates": self.duplicates,
            "attempts": dict(self.attempts),
            "faults": dict(self.faults),
            "storm_answers": {str(k): v for k, v in self.storm_answers.items()},
            "storms": [
                [round(s, 1), round(e, 1), st]
                for s, e, st in self.storms
                if s < time.monotonic() - self.started
            ],
            "holds": dict(self.holds),
            "unmarked": self.unmarked,
            "timeline": self.timeline,
            "unauthorized": self.unauthorized,
        }

    # -- HTTP ---------------------------------------------------------------------------

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for _ in range(MAX_REQUESTS_PER_CONNECTION):
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = await self.read_body(reader, headers)
                keep = await self.dispatch(method, path, headers, body, reader, writer)
                if not keep or headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            if not writer.transport.is_closing():
                writer.close()

    @staticmethod
    async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts = []
            for _ in range(1_000_000):
                size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
                parts.append(await reader.readexactly(size + 2))
                if size == 0:
                    break
            return b"".join(p[:-2] for p in parts)
        return await reader.readexactly(int(headers.get("content-length", "0")))

    async def dispatch(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Answer one request; False closes the connection."""
        if method == "GET" and path == "/__chaos/ledger":
            await send(writer, 200, json.dumps(self.ledger()).encode())
            return True
        if headers.get("authorization") != f"Bearer {API_KEY}":
            self.unauthorized += 1
            await send(writer, 401, b'{"error": {"message": "bad upstream key"}}')
            return True
        marker = MARKER.search(body)
        if method != "POST" or marker is None:
            self.unmarked += 1
            await send(writer, 400, b'{"error": {"message": "no chaos marker"}}')
            return True
        rid, fault = marker.group(1).decode(), marker.group(2).decode()
        self.attempts[rid] += 1
        status = self.storm()
        if status is not None:
            self.storm_answers[status] += 1
            self.note(rid, f"storm {status}")
            await send(
                writer,
                status,
                b'{"error": {"message": "storm", "type": "rate_limit_error"}}',
                {"Retry-After": "1"},
            )
            return True
        if fault not in ("hold", "big") and self.attempts[rid] > 1:
            fault = "none"  # the retry of a faulted attempt is served normally
        self.faults[fault] += 1
        self.note(rid, f"attempt {self.attempts[rid]}: {fault}")
        request = json.loads(body)
        if path.endswith("/embeddings"):
            return await self.embeddings(rid, fault, request, reader, writer)
        if request.get("stream"):
            return await self.stream(rid, fault, reader, writer)
        return await self.chat(rid, fault, request, reader, writer)

    async def before_answer(
        self, fault: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes
    ) -> bool:
        """Faults that strike before (or instead of) a plain answer. True: answered."""
        if fault == "reset_head":
            reset(writer)
            return True
        if fault == "hang":
            closed = await wait_closed(reader, HANG_MAX)
            self.holds["hang_closed" if closed else "hang_timeout"] += 1
            reset(writer)
            return True
        if fault == "error500":
            await send(writer, 500, b'{"error": {"message": "scripted failure"}}')
            return True
        if fault == "bad_json":
            await send(writer, 200, b'{"id": "chatcmpl-x", "choices": [tru')
            return True
        if fault == "gzip_bomb":
            await send(writer, 200, self.bomb, {"Content-Encoding": "gzip"})
            return True
        if fault == "reset_mid":
            writer.write(head(200, len(body)) + body[: len(body) // 2])
            await writer.drain()
            reset(writer)
            return True
        if fault == "hold":
            closed = await wait_closed(reader, HOLD_PLAIN)
            self.holds["plain_closed" if closed else "plain_timeout"] += 1
            if closed:
                return True
        return False

    def note(self, rid: str, what: str) -> None:
        self.timeline.setdefault(rid, []).append(f"{time.monotonic() - self.started:.3f} {what}")

    def serve(self, rid: str, endpoint: str, prompt: int, completion: int) -> None:
        self.note(rid, "served")
        if rid in self.served:
            self.duplicates.append(rid)  # once per extra answer
        self.served[rid] = {"endpoint": endpoint, "prompt": prompt, "completion": completion}

    async def chat(
        self,
        rid: str,
        fault: str,
        request: dict[str, Any],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        prompt, completion = tokens_for(rid, 1), tokens_for(rid, 2)
        answer = json.dumps(
            {
                "id": f"chatcmpl-{rid}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": request.get("model", "chaos"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "word " * completion},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            }
        ).encode()
        if await self.before_answer(fault, reader, writer, answer):
            return fault in ("error500", "bad_json", "gzip_bomb")
        if fault == "drip":
            writer.write(head(200, len(answer)))
            step = max(1, len(answer) // 8)
            for at in range(0, len(answer), step):
                writer.write(answer[at : at + step])
                await writer.drain()
                await asyncio.sleep(0.25)
        else:
            writer.write(head(200, len(answer)) + answer)
            await writer.drain()
        self.serve(rid, "chat.completions", prompt, completion)
        return True

    async def embeddings(
        self,
        rid: str,
        fault: str,
        request: dict[str, Any],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        inputs = request.get("input")
        count = len(inputs) if isinstance(inputs, list) else 1
        prompt = tokens_for(rid, 3)
        answer = json.dumps(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": [0.25, -0.5, 0.125, float(i)]}
                    for i in range(count)
                ],
                "model": request.get("model", "chaos-embed"),
                "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
            }
        ).encode()
        if await self.before_answer(fault, reader, writer, answer):
            return fault in ("error500", "bad_json", "gzip_bomb")
        if fault == "drip":
            writer.write(head(200, len(answer)))
            step = max(1, len(answer) // 8)
            for at in range(0, len(answer), step):
                writer.write(answer[at : at + step])
                await writer.drain()
                await asyncio.sleep(0.25)
        else:
            writer.write(head(200, len(answer)) + answer)
            await writer.drain()
        self.serve(rid, "embeddings", prompt, 0)
        return True

    async def stream(
        self, rid: str, fault: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        prompt = tokens_for(rid, 1)
        count = 2000 if fault == "big" else 8
        text = ("x" * 1000 + " ") if fault == "big" else "tok "
        base = {
            "id": f"chatcmpl-{rid}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": "chaos",
        }

        def event(choices: list[Any], usage: dict[str, int] | None = None) -> bytes:
            return b"data: " + json.dumps({**base, "choices": choices, "usage": usage}).encode()

        events = [
            event([{"index": 0, "delta": {"role": "assistant", "content": text}}])
            for _ in range(count)
        ]
        events.append(event([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
        usage = {"prompt_tokens": prompt, "completion_tokens": count}
        events.append(event([], {**usage, "total_tokens": prompt + count}))
        events.append(b"data: [DONE]")
        if fault in ("reset_head", "hang", "error500", "bad_json", "gzip_bomb"):
            if fault == "gzip_bomb":
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    b"Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                for at in range(0, len(self.bomb), 16384):
                    writer.write(chunk(self.bomb[at : at + 16384]))
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                return False
            await self.before_answer(fault, reader, writer, b"")
            return fault in ("error500", "bad_json")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for i, payload in enumerate(events):
            if fault == "reset_mid" and i == 3:
                reset(writer)
                return False
            writer.write(chunk(payload + b"\n\n"))
            await writer.drain()
            if fault == "drip":
                await asyncio.sleep(0.2)
            if fault == "hold" and i == 2:
                closed = await wait_closed(reader, HOLD_STREAM)
                self.holds["stream_closed" if closed else "stream_timeout"] += 1
                if closed:
                    return False
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        self.serve(rid, "chat.completions", prompt, count)
        return True


def head(status: int, length: int, extra: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} X", "Content-Type: application/json", f"Content-Length: {length}"]
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def send(
    writer: asyncio.StreamWriter, status: int, body: bytes, extra: dict[str, str] | None = None
) -> None:
    writer.write(head(status, len(body), extra) + body)
    await writer.drain()


def chunk(payload: bytes) -> bytes:
    return f"{len(payload):x}\r\n".encode() + payload + b"\r\n"


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (linger 0), as a crashed peer or a middlebox would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def wait_closed(reader: asyncio.StreamReader, most: float) -> bool:
    """Wait until the peer closes the connection (True) or ``most`` seconds pass."""
    try:
        data = await asyncio.wait_for(reader.read(1), most)
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return data == b""


async def main(port: int, seed: int) -> None:
    fake = Fake(seed)
    server = await asyncio.start_server(
        fake.connection, "127.0.0.1", port, backlog=1024, limit=1024 * 1024
    )
    print(f"chaos upstream listening on {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
