"""The Responses API over chat completions, streamed: chat chunks in, the Responses event
sequence out (``response.created`` ... ``response.completed``), numbered in order, as
named SSE frames; the usual events (a text delta, a text message opened and closed) from
byte templates."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from conduit_tornado.routing.providers.base import Json, Usage

from .responses import new_id
from .responses_output import output_text_part, response_object, status_of
from .sse import named_events


def _refusal_part(text: str) -> Json:
    return {"type": "refusal", "refusal": text}


@dataclass
class _Open:
    """An output item being streamed."""

    index: int
    item: Json
    text: list[str] = field(default_factory=list)
    refusal: bool = False  # a message whose one part is a refusal, not output_text
    #: A text message's delta frame from its item_id to its delta, encoded once.
    delta_middle: bytes = b""


# A text delta's named SSE frame around its sequence number, ids and text: the bytes
# named_events makes of the event _text builds (tests/test_responses_frames.py holds them
# equal), without a dict and an encoding of every field per streamed token.
_DELTA_HEAD = (
    b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
    b'"sequence_number":'
)
_DELTA_TAIL = b',"logprobs":[]}\n\n'


def _more_text(chunk: Json) -> str | None:
    """The text of a chunk that holds only text for the first choice, which most chunks
    of a streamed answer are (None for any other chunk)."""
    choices = chunk.get("choices")
    if type(choices) is not list or len(choices) != 1:
        return None
    choice = choices[0]
    if type(choice) is not dict or choice.get("index", 0) != 0 or choice.get("finish_reason"):
        return None
    delta = choice.get("delta")
    if type(delta) is not dict:
        return None
    text = delta.get("content")
    if type(text) is not str or not text:
        return None
    # A delta of text alone (the usual one) needs no look for a refusal or tool calls.
    if len(delta) > 1 and (delta.get("refusal") or delta.get("tool_calls")):
        return None
    return text


def _delta_middle(quoted_id: bytes, index: int) -> bytes:
    return b',"item_id":%s,"output_index":%d,"content_index":0,"delta":' % (quoted_id, index)


# The output_item.added and content_part.added frames of a text message (sequence
# numbers, output index and quoted item id filled in), as named_events encodes _text's
# events: held equal by tests/test_responses_frames.py.
_OPENED = (
    b"event: response.output_item.added\n"
    b'data: {"type":"response.output_item.added","sequence_number":%d,"output_index":%d,'
    b'"item":{"id":%s,"type":"message","status":"in_progress","role":"assistant",'
    b'"content":[]}}\n\n'
    b"event: response.content_part.added\n"
    b'data: {"type":"response.content_part.added","sequence_number":%d,"item_id":%s,'
    b'"output_index":%d,"content_index":0,"part":{"type":"output_text","text":"",'
    b'"annotations":[],"logprobs":[]}}\n\n'
)
# And its three closing frames (_close_message's events), the text filled in thrice.
_CLOSED = (
    b"event: response.output_text.done\n"
    b'data: {"type":"response.output_text.done","sequence_number":%d,"item_id":%s,'
    b'"output_index":%d,"content_index":0,"text":%s,"logprobs":[]}\n\n'
    b"event: response.content_part.done\n"
    b'data: {"type":"response.content_part.done","sequence_number":%d,"item_id":%s,'
    b'"output_index":%d,"content_index":0,"part":{"type":"output_text","text":%s,'
    b'"annotations":[],"logprobs":[]}}\n\n'
    b"event: response.output_item.done\n"
    b'data: {"type":"response.output_item.done","sequence_number":%d,"output_index":%d,'
    b'"item":{"id":%s,"type":"message","status":"completed","role":"assistant",'
    b'"content":[{"type":"output_text","text":%s,"annotations":[],"logprobs":[]}]}}\n\n'
)


def _opened_message(item_id: str) -> Json:
    """An assistant message item as output_item.added announces it."""
    return {
        "id": item_id,
        "type": "message",
        "status": "in_progress",
        "role": "assistant",
        "content": [],
    }


class EventStream:
    """Chat chunks in, Responses stream events out, numbered in order.

    The item a chunk starts is announced before its first delta, and closed (its
    ``...done`` events) when the next item starts or the stream ends; the last event is
    ``response.completed`` (or ``response.incomplete``) carrying the whole Response with
    its usage, which chat streams report only at their end."""

    def __init__(self, body: Json, response_id: str, model: str, created_at: int) -> None:
        self.body = body
        self.response_id = response_id
        self.model = model
        self.created_at = created_at
        self.sequence = 0
        self.output: list[Json] = []
        self.finish_reason: Any = None
        self._message: _Open | None = None
        self._calls: dict[int, _Open] = {}
        #: The whole Response, once the stream has ended.
        self.final: Json | None = None
        #: The whole Response as JSON, when finish_frames encoded it.
        self.final_encoded: bytes | None = None
        #: Characters of output text streamed (for an estimate without usage).
        self.chars = 0
        #: What batch_frames noted: the model the provider says answered, and usage.
        self.reported: str | None = None
        self.usage: Usage | None = None

    def _event(self, kind: str, **fields: Any) -> Json:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def response(self, status: str, **kwargs: Any) -> Json:
        return response_object(
            self.body,
            response_id=self.response_id,
            model=self.model,
            created_at=self.created_at,
            status=status,
            **kwargs,
        )

    def start(self) -> list[Json]:
        """The stream's first events. A background response is created queued (as its
        POST without stream answers), said queued, then in progress as OpenAI's are."""
        snapshot = self.response("in_progress")
        if not self.body.get("background"):
            return [
                self._event("response.created", response=snapshot),
                self._event("response.in_progress", response=snapshot),
            ]
        queued = self.response("queued")
        return [
            self._event("response.created", response=queued),
            self._event("response.queued", response=queued),
            self._event("response.in_progress", response=snapshot),
        ]

    # The same events as named SSE frames (what start, feed and finish return, through
    # sse.named_events), encoded with less work: the Response in the first two and the
    # last event is encoded once, and a text delta from a template.

    def start_frames(self) -> bytes:
        snapshot = orjson.dumps(self.response("in_progress"))
        if not self.body.get("background"):
            return self._response_frame("response.created", snapshot) + self._response_frame(
                "response.in_progress", snapshot
            )
        queued = orjson.dumps(self.response("queued"))
        return (
            self._response_frame("response.created", queued)
            + self._response_frame("response.queued", queued)
            + self._response_frame("response.in_progress", snapshot)
        )

    def prepared_frames(self) -> bytes:
        """The events of a response that generates nothing (``generate`` false, the
        WebSocket mode's warm-up): created, then completed with no output and zero usage;
        ``final`` and ``final_encoded`` are then that Response."""
        created = self._response_frame(
            "response.created", orjson.dumps(self.response("in_progress"))
        )
        self.final = self.response("completed", usage=Usage())
        self.final_encoded = orjson.dumps(self.final)
        return created + self._response_frame("response.completed", self.final_encoded)

    def batch_frames(self, batch: list[Json]) -> bytes:
        """The frames of feed's events for each chunk of a batch (what one read from
        upstream held), and what the route notes of them: the model the provider says
        answered and the usage, in ``reported`` and ``usage``. Most chunks are more text
        for the open message, one a read: that case, and the text that opens a message,
        are templates."""
        frames = []
        for chunk in batch:
            if self.reported is None:
                reported = chunk.get("model")
                if isinstance(reported, str) and reported:
                    self.reported = reported
            usage = chunk.get("usage")
            if usage:
                self.usage = Usage.from_openai(usage)
            current = self._message
            if current is None:
                if not self._calls:
                    text = _more_text(chunk)
                    if text is not None:
                        frames.append(self._open_frames(text))
                        continue
            elif current.delta_middle:
                # _more_text, inline: this runs for every streamed token.
                choices = chunk.get("choices")
                if type(choices) is list and len(choices) == 1:
                    choice = choices[0]
                    if (
                        type(choice) is dict
                        and not choice.get("finish_reason")
                        and choice.get("index", 0) == 0
                    ):
                        delta = choice.get("delta")
                        if type(delta) is dict:
                            text = delta.get("content")
                            if (
                                type(text) is str
                                and text
                                and (
                                    len(delta) == 1
                                    or not (delta.get("refusal") or delta.get("tool_calls"))
                                )
                            ):
                                frames.append(self._delta_frame(current, text))
                                continue
            events = self.feed(chunk)
            if events:
                frames.append(named_events(events))
        return frames[0] if len(frames) == 1 else b"".join(frames)

    def _delta_frame(self, current: _Open, text: str) -> bytes:
        # Only more text for the open message: what _text does for it.
        current.text.append(text)
        self.chars += len(text)
        sequence = self.sequence
        self.sequence = sequence + 1
        return b"%s%d%s%s%s" % (
            _DELTA_HEAD,
            sequence,
            current.delta_middle,
            orjson.dumps(text),
            _DELTA_TAIL,
        )

    def _open_frames(self, text: str) -> bytes:
        """What _text's events for the text that opens a message (nothing being open)
        encode to: the item and its part announced, then the first delta."""
        index = len(self.output)
        item_id = new_id("msg")
        item = _opened_message(item_id)
        quoted = orjson.dumps(item_id)
        current = _Open(index, item, delta_middle=_delta_middle(quoted, index))
        self._message = current
        sequence = self.sequence
        self.sequence = sequence + 2
        return _OPENED % (sequence, index, quoted, sequence + 1, quoted, index) + self._delta_frame(
            current, text
        )

    def _close_frames(self, current: _Open) -> bytes:
        """What _close_message's events for an open text message encode to."""
        self._message = None
        text = "".join(current.text)
        part = output_text_part(text)
        item = {**current.item, "status": "completed", "content": [part]}
        self.output.append(item)
        sequence = self.sequence
        self.sequence = sequence + 3
        quoted, index = orjson.dumps(current.item["id"]), current.index
        encoded = orjson.dumps(text)
        return _CLOSED % (
            sequence,
            quoted,
            index,
            encoded,
            sequence + 1,
            quoted,
            index,
            encoded,
            sequence + 2,
            index,
            quoted,
            encoded,
        )

    def finish_frames(self, usage: Usage) -> bytes:
        """finish's events as frames; ``final_encoded`` is then the Response encoded."""
        current = self._message
        if current is not None and not current.refusal:
            closed = self._close_frames(current)
        else:
            closed = named_events(self._close_message())
        if self._calls:
            closed += named_events(self._close_calls())
        final, kind = self._final(usage)
        encoded = orjson.dumps(final)
        self.final_encoded = encoded
        return closed + self._response_frame(kind, encoded)

    def _response_frame(self, kind: str, response: bytes) -> bytes:
        # orjson.dumps of {"type", "sequence_number", "response"} with the Response
        # already encoded.
        sequence = self.sequence
        self.sequence = sequence + 1
        name = kind.encode()
        return b'event: %s\ndata: {"type":"%s","sequence_number":%d,"response":%s}\n\n' % (
            name,
            name,
            sequence,
            response,
        )

    def feed(self, chunk: Json) -> list[Json]:
        events: list[Json] = []
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # the Responses API has one answer per request
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                events += self._text(text)
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                events += self._text(refusal, refusal=True)
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    events += self._call(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def _text(self, text: str, refusal: bool = False) -> list[Json]:
        current = self._message
        if current is not None and current.refusal == refusal and not refusal:
            # Every chunk after the first: one delta event, built in one go (this runs per
            # streamed token; the fields and their order are _event's).
            current.text.append(text)
            if isinstance(text, str):
                self.chars += len(text)
            sequence = self.sequence
            self.sequence = sequence + 1
            return [
                {
                    "type": "response.output_text.delta",
                    "sequence_number": sequence,
                    "item_id": current.item["id"],
                    "output_index": current.index,
                    "content_index": 0,
                    "delta": text,
                    "logprobs": [],
                }
            ]
        events: list[Json] = []
        if self._message is not None and self._message.refusal != refusal:
            events += self._close_message()  # text after a refusal (or before): a new item
        if self._message is None:
            events += self._close_calls()
            item_id = new_id("msg")
            item = _opened_message(item_id)
            index = len(self.output) + len(self._calls)
            middle = b"" if refusal else _delta_middle(orjson.dumps(item_id), index)
            self._message = _Open(index, item, refusal=refusal, delta_middle=middle)
            events.append(
                self._event(
                    "response.output_item.added", output_index=self._message.index, item=item
                )
            )
            events.append(
                self._event(
                    "response.content_part.added",
                    item_id=item["id"],
                    output_index=self._message.index,
                    content_index=0,
                    part=_refusal_part("") if refusal else output_text_part(""),
                )
            )
        self._message.text.append(text)
        if not refusal and isinstance(text, str):
            self.chars += len(text)
        ids = {"item_id": self._message.item["id"], "output_index": self._message.index}
        if refusal:
            events.append(self._event("response.refusal.delta", **ids, content_index=0, delta=text))
        else:
            events.append(
                self._event(
                    "response.output_text.delta", **ids, content_index=0, delta=text, logprobs=[]
                )
            )
        return events

    def _call(self, call: Json) -> list[Json]:
        events: list[Json] = []
        index = call.get("index", 0)
        function = call.get("function") or {}
        current = self._calls.get(index)
        if current is None:
            events += self._close_message()
            item = {
                "id": new_id("fc"),
                "type": "function_call",
                "status": "in_progress",
                "call_id": call.get("id") or new_id("call"),
                "name": function.get("name") or "",
                "arguments": "",
            }
            current = _Open(len(self.output) + len(self._calls), item)
            self._calls[index] = current
            events.append(
                self._event(
                    "response.output_item.added", output_index=current.index, item=dict(item)
                )
            )
        elif function.get("name") and not current.item["name"]:
            current.item["name"] = function["name"]
        arguments = function.get("arguments")
        if arguments:
            current.text.append(arguments)
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=current.item["id"],
                    output_index=current.index,
                    delta=arguments,
                )
            )
        return events

    def _close_message(self, status: str = "completed") -> list[Json]:
        current, self._message = self._message, None
        if current is None:
            return []
        text = "".join(current.text)
        part = _refusal_part(text) if current.refusal else output_text_part(text)
        item = {**current.item, "status": status, "content": [part]}
        self.output.append(item)
        ids = {"item_id": item["id"], "output_index": current.index}
        done = (
            self._event("response.refusal.done", **ids, content_index=0, refusal=text)
            if current.refusal
            else self._event(
                "response.output_text.done", **ids, content_index=0, text=text, logprobs=[]
            )
        )
        return [
            done,
            self._event("response.content_part.done", **ids, content_index=0, part=part),
            self._event("response.output_item.done", output_index=current.index, item=item),
        ]

    def _close_calls(self, status: str = "completed") -> list[Json]:
        events: list[Json] = []
        for current in sorted(self._calls.values(), key=lambda c: c.index):
            arguments = "".join(current.text) or "{}"
            item = {**current.item, "status": status, "arguments": arguments}
            self.output.append(item)
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=current.index,
                    name=item["name"],
                    arguments=arguments,
                )
            )
            events.append(
                self._event("response.output_item.done", output_index=current.index, item=item)
            )
        self._calls.clear()
        return events

    def finish(self, usage: Usage) -> list[Json]:
        """Close what is open and end with the whole Response."""
        events = self._close_message() + self._close_calls()
        final, kind = self._final(usage)
        events.append(self._event(kind, response=final))
        return events

    def _final(self, usage: Usage) -> tuple[Json, str]:
        status, incomplete = status_of(self.finish_reason)
        final = self.response(status, output=self.output, usage=usage, incomplete=incomplete)
        self.final = final
        return final, "response.completed" if status == "completed" else "response.incomplete"

    def cancel(self, usage: Usage) -> list[Json]:
        """The end of a stream cancelled part way (a background response's cancel): what
        is open closed as incomplete, then the Response, cancelled, with what was made
        and its usage. OpenAI's stream has no event of its own for a cancel (its runs
        even go on to response.completed); that is the one ending every client waits for,
        and the SDK's stream state accepts it once each item has its ``done``."""
        events = self._close_message("incomplete") + self._close_calls("incomplete")
        self.final = self.response("cancelled", output=self.output, usage=usage)
        events.append(self._event("response.completed", response=self.final))
        return events

    def fail(self, code: str, message: str) -> Json:
        """The event that ends a stream whose provider failed after it started."""
        self.final = self.response(
            "failed", output=self.output, error={"code": code, "message": message}
        )
        return self._event("response.failed", response=self.final)
