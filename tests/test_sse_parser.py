"""The SSE reader on byte streams split at every possible place."""

from __future__ import annotations

from typing import Any

import pytest

from conduit_tornado.routing.upstream import ProviderError, sse_events

pytestmark = pytest.mark.asyncio

STREAM = (
    b': keepalive\r\n\r\nevent: message_start\r\ndata: {"a":1}\r\n\r\n'
    b"data: line one\ndata: line two\n\n\n\ndata:no-space\n\ndata: [DONE]"
)
EXPECTED = [
    ("message_start", b'{"a":1}'),
    ("message", b"line one\nline two"),
    ("message", b"no-space"),
    ("message", b"[DONE]"),
]


class Body:
    """Stands in for the HTTP client's response: the parser only calls ``next_chunk()``."""

    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = list(pieces)

    async def next_chunk(self) -> bytes | None:
        return self._pieces.pop(0) if self._pieces else None


async def events(pieces: list[bytes]) -> list[tuple[str, bytes]]:
    body: Any = Body(pieces)
    return [event async for event in sse_events(body)]


async def test_every_split_point_gives_the_same_events() -> None:
    assert await events([STREAM]) == EXPECTED
    for cut in range(1, len(STREAM)):
        assert await events([STREAM[:cut], STREAM[cut:]]) == EXPECTED, cut
    assert await events([bytes([b]) for b in STREAM]) == EXPECTED


async def test_an_endless_event_is_refused() -> None:
    with pytest.raises(ProviderError) as info:
        await events([b"data: " + b"x" * (1024 * 1024)] * 20)
    assert info.value.kind == "too_large"  # an oversized event is not asked for again


async def test_a_burst_of_events_in_one_read_comes_out_whole_and_in_order() -> None:
    burst = b"".join(b'data: {"n":%d}\n\n' % i for i in range(5000))
    got = await events([burst[:-7], burst[-7:]])  # the last event completes in a later read
    assert got == [("message", b'{"n":%d}' % i) for i in range(5000)]


async def test_reads_of_one_whole_event_each_give_what_a_byte_at_a_time_read_gives() -> None:
    # A read holding exactly one data-only event is taken on a shorter path than the rest:
    # every neighbour it can have must leave the events as the general walk finds them.
    pieces = [
        b'data: {"n":1}\n\n',
        b'data: {"n":2}\r\n\r\n',
        b'data: {"n":3}\n\n',
        b"event: named\ndata: x\n\n",
        b'data: {"n":4}\n\n',
        b"data: a\ndata: b\n\n",
        b"data:{}\n\n",
        b": keepalive\n\n",
        b'data: {"n":5}\r',
        b"\n\r\n",
        b'data: {"n":6}\n\n',
        b'data: {"n":7}\n',
        b'\ndata: {"n":8}\n\n',
        b'data: {"n":9}\n\ndata: {"n":10}\n\n',
        b'data: {"n":11}\n\n',
    ]
    whole = await events(pieces)
    assert whole == await events([bytes([b]) for b in b"".join(pieces)])
    assert [data for _, data in whole if data.startswith(b'{"n"')] == [
        b'{"n":%d}' % n for n in range(1, 12)
    ]
    assert ("named", b"x") in whole and ("message", b"a\nb") in whole
