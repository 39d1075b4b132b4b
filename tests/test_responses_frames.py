"""The encoded Responses stream (EventStream.start_frames, feed_frames, finish_frames in
formats/responses_events.py) is byte for byte what the event dicts (start, feed, finish) give
through named_events: the frames take shortcuts (a text delta from a template, the
Response encoded once), and a client must not be able to tell. Chunk sequences come from
hypothesis, mixing text, refusals, tool calls, finish reasons, usage-only chunks, other
choices, and choices that are not lists or not objects."""

from __future__ import annotations

import itertools
import os
import re
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conduit_tornado.formats import responses_events, responses_output
from conduit_tornado.formats.responses import new_id
from conduit_tornado.formats.responses_events import EventStream
from conduit_tornado.formats.sse import named_events
from conduit_tornado.routing.providers.base import Usage

BODY = {"model": "m", "input": "hi", "max_output_tokens": 32, "metadata": {"k": "v"}}
TEXT = st.text(max_size=12)

delta = st.one_of(
    st.fixed_dictionaries({"content": TEXT}),
    st.fixed_dictionaries({"role": st.just("assistant"), "content": TEXT}),
    st.fixed_dictionaries({"content": TEXT, "refusal": st.none()}),
    st.fixed_dictionaries({"refusal": TEXT}),
    st.fixed_dictionaries({"content": TEXT, "refusal": TEXT}),
    st.fixed_dictionaries(
        {
            "tool_calls": st.lists(
                st.fixed_dictionaries(
                    {
                        "index": st.integers(0, 2),
                        "function": st.fixed_dictionaries(
                            {}, optional={"name": TEXT, "arguments": TEXT}
                        ),
                    },
                    optional={"id": TEXT},
                ),
                max_size=2,
            )
        },
        optional={"content": TEXT},
    ),
    st.fixed_dictionaries({"content": st.none()}),
    st.none(),
)
choice = st.fixed_dictionaries(
    {"delta": delta},
    optional={
        "index": st.one_of(st.just(0), st.just(1), st.none()),
        "finish_reason": st.sampled_from([None, "stop", "length", "tool_calls", "content_filter"]),
    },
)
chunk = st.one_of(
    st.fixed_dictionaries({"choices": st.lists(choice, max_size=2)}, optional={"model": TEXT}),
    st.just({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}),
    st.just({"choices": "not a list"}),
    st.just({"choices": [["not a dict"]]}),
)
FRAMES = settings(
    max_examples=300,
    deadline=500,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)


@pytest.fixture(autouse=True)
def counted_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids from a counter that each stream restarts, so two streams fed alike name their
    items alike (only the ids are random otherwise)."""
    monkeypatch.setattr(responses_events, "new_id", _counted)


_counter = itertools.count()


def _counted(prefix: str) -> str:
    return f"{prefix}_{next(_counter)}"


def _restart() -> None:
    global _counter
    _counter = itertools.count()


def _by_dicts(chunks: list[Any], usage: Usage) -> tuple[bytes, EventStream]:
    _restart()
    events = EventStream(BODY, "resp_1", "m", 1700000000)
    out = named_events(events.start())
    for piece in chunks:
        out += named_events(events.feed(piece))
    return out + named_events(events.finish(usage)), events


def _by_frames(
    chunks: list[Any], usage: Usage, sizes: list[int] | None = None
) -> tuple[bytes, EventStream]:
    """The frames, the chunks fed in batches of ``sizes`` (one by one without)."""
    _restart()
    events = EventStream(BODY, "resp_1", "m", 1700000000)
    out = events.start_frames()
    at = 0
    for size in itertools.chain(sizes or (), itertools.repeat(1)):
        if at >= len(chunks):
            break
        out += events.batch_frames(chunks[at : at + size])
        at += size
    return out + events.finish_frames(usage), events


def _plain_text(count: int) -> list[Any]:
    return [
        {"choices": [{"index": 0, "delta": {"content": f'tok{i} "é\n'}, "finish_reason": None}]}
        for i in range(count)
    ]


@FRAMES
@given(st.lists(chunk, max_size=12), st.lists(st.integers(1, 4), max_size=12))
@example(_plain_text(20), [])
@example([*_plain_text(3), {"choices": [{"delta": {"refusal": "no"}}]}, *_plain_text(2)], [2, 3])
def test_frames_are_the_events_encoded(chunks: list[Any], sizes: list[int]) -> None:
    usage = Usage(12, 20)
    with pytest.MonkeyPatch.context() as patch:
        # completed_at is the clock's second: the same one for both streams.
        patch.setattr(responses_output, "time", SimpleNamespace(time=lambda: 1700000100.5))
        expected, by_dicts = _by_dicts(orjson.loads(orjson.dumps(chunks)), usage)
        got, by_frames = _by_frames(orjson.loads(orjson.dumps(chunks)), usage, sizes)
    assert got == expected
    assert by_frames.final == by_dicts.final
    assert by_frames.final_encoded == orjson.dumps(by_dicts.final)
    assert by_frames.sequence == by_dicts.sequence
    # What the route notes (as note_chunk does): the first model named, the last usage.
    models = [c.get("model") for c in chunks if isinstance(c.get("model"), str) and c["model"]]
    usages = [Usage.from_openai(c["usage"]) for c in chunks if c.get("usage")]
    assert by_frames.reported == (models[0] if models else None)
    assert by_frames.usage == (usages[-1] if usages else None)


def test_streamed_characters_are_counted_for_estimates() -> None:
    chunks = [*_plain_text(2), {"choices": [{"delta": {"refusal": "not counted"}}]}]
    _, events = _by_frames(chunks, Usage(1, 1))
    assert events.chars == 2 * len('tok0 "é\n')


def test_ids_are_unique_random_and_new_in_a_forked_child() -> None:
    ids = [new_id("msg") for _ in range(1000)]  # several draws of the pool
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"msg_[0-9a-f]{48}", i) for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, to the parent
        os.write(write, new_id("msg").encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read)
    assert child not in ids
    assert child != new_id("msg")  # the parent's next one: not what the child took


def test_a_background_stream_starts_queued_in_frames_as_in_events() -> None:
    body = {**BODY, "background": True}
    frames = EventStream(body, "resp_1", "m", 1700000000).start_frames()
    events = EventStream(body, "resp_1", "m", 1700000000).start()
    assert frames == named_events(events)
    kinds = [(e["type"], e["response"]["status"]) for e in events]
    assert kinds == [
        ("response.created", "queued"),
        ("response.queued", "queued"),
        ("response.in_progress", "in_progress"),
    ]
