"""Named server-sent event frames (``event: <type>`` then ``data: <json>``), as OpenAI's
Responses API and Anthropic's Messages API send them."""

from __future__ import annotations

import orjson

from conduit_tornado.routing.providers.base import Json


def named_events(events: list[Json]) -> bytes:
    """Events as named SSE frames: clients that dispatch on the event name and clients
    that read the data's ``type`` both work."""
    heads = _EVENT_HEADS
    return b"".join(
        [
            (heads.get(e["type"]) or _event_head(e["type"])) + orjson.dumps(e) + b"\n\n"
            for e in events
        ]
    )


def _event_head(kind: str) -> bytes:
    head = b"event: " + kind.encode() + b"\ndata: "
    if len(_EVENT_HEADS) < 256:  # the APIs' own event names: a few dozen
        _EVENT_HEADS[kind] = head
    return head


_EVENT_HEADS: dict[str, bytes] = {}
