"""A fake realtime provider: a WebSocket server on loopback speaking the current event
names, for OpenAI (/v1/realtime?model=) and Azure (/openai/realtime?deployment=).

Its audio and transcript echo the session's instructions, so cross-talk between sessions
shows. Extra client events for tests: ``test.drop`` (closes 1011), ``test.binary``.

WebRTC calls as OpenAI serves them: ``POST /v1/realtime/calls`` (multipart ``sdp`` +
``session``, or application/sdp) answers 201 with an SDP answer and ``Location:
/v1/realtime/calls/{id}``; ``/v1/realtime?call_id=`` is the call's sideband socket;
``POST /v1/realtime/calls/{id}/hangup`` ends it (closing its sidebands). ``respond(id)``
stands for the model answering over the media path: each sideband of the call sees a
response.created and a response.done with usage.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

import tornado.httpserver
import tornado.httputil
import tornado.web
import tornado.websocket

from tests.fakes.base import Loopback
from tests.fakes.providers import API_KEY


@dataclass
class Conn:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    events: list[dict[str, Any]] = field(default_factory=list)
    binary: list[bytes] = field(default_factory=list)
    close_code: int | None = None
    closed: bool = False


@dataclass
class Call:
    id: str
    sdp: str
    session: dict[str, Any]
    headers: dict[str, str]
    hung_up: bool = False
    peers: list[RealtimePeer] = field(default_factory=list)


@dataclass
class FakeRealtime(Loopback):
    conns: list[Conn] = field(default_factory=list)
    calls: dict[str, Call] = field(default_factory=dict)
    port: int = 0
    server: tornado.httpserver.HTTPServer | None = None

    def respond(self, call_id: str, usage: dict[str, Any] | None = None) -> int:
        """The model answers on the call: every sideband of it sees the response."""
        peers = [p for p in self.calls[call_id].peers if p.ws_connection is not None]
        for peer in peers:
            peer.answer(usage or USAGE)
        return len(peers)

    async def start(self) -> None:
        app = tornado.web.Application(
            [
                (r"/v1/realtime/calls", CallsEndpoint, {"fake": self}),
                (r"/v1/realtime/calls/([^/]+)/hangup", HangupEndpoint, {"fake": self}),
                (r"/v1/realtime", RealtimePeer, {"fake": self, "azure": False}),
                (r"/openai/realtime", RealtimePeer, {"fake": self, "azure": True}),
            ]
        )
        self.listen(app)


USAGE = {
    "total_tokens": 150,
    "input_tokens": 100,
    "output_tokens": 50,
    "input_token_details": {"text_tokens": 40, "audio_tokens": 60, "cached_tokens": 0},
    "output_token_details": {"text_tokens": 10, "audio_tokens": 40},
}


class RealtimePeer(tornado.websocket.WebSocketHandler):
    def initialize(self, fake: FakeRealtime, azure: bool) -> None:
        self.fake = fake
        self.azure = azure
        self.session: dict[str, Any] = {}
        self.audio = 0

    async def prepare(self) -> None:
        ok = (
            (
                self.request.headers.get("api-key") == API_KEY
                and self.get_query_argument("api-version", None)
                and self.get_query_argument("deployment", None)
            )
            if self.azure
            else (
                self.request.headers.get("Authorization") == f"Bearer {API_KEY}"
                and (
                    self.get_query_argument("model", None)
                    or self.get_query_argument("call_id", None)
                    or self.get_query_argument("intent", None) == "transcription"
                )
            )
        )
        if not ok:
            raise tornado.web.HTTPError(401)
        call_id = self.get_query_argument("call_id", None)
        self.call = self.fake.calls.get(call_id) if call_id else None
        if call_id and (self.call is None or self.call.hung_up):
            raise tornado.web.HTTPError(404)

    def open(self) -> None:
        self.conn = Conn(
            self.request.path,
            {k: self.get_query_argument(k) for k in self.request.query_arguments},
            {k.lower(): v for k, v in self.request.headers.items()},
        )
        self.fake.conns.append(self.conn)
        if self.call is not None:
            self.call.peers.append(self)
            model = str(self.call.session.get("model"))
        else:
            model = self.get_query_argument("deployment" if self.azure else "model", "")
        self.session = {
            "id": "sess_up_" + secrets.token_hex(4),
            "object": "realtime.session",
            "model": model,
        }
        self.emit({"type": "session.created", "session": self.session})

    def emit(self, event: dict[str, Any]) -> None:
        event.setdefault("event_id", "event_" + secrets.token_hex(6))
        self.write_message(json.dumps(event))

    def on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self.conn.binary.append(message)
            self.write_message(message[::-1], binary=True)
            return
        event = json.loads(message)
        self.conn.events.append(event)
        kind = event.get("type")
        if kind == "session.update":
            self.session.update(event.get("session") or {})
            self.emit({"type": "session.updated", "session": self.session})
        elif kind == "input_audio_buffer.append":
            self.audio += len(base64.b64decode(event["audio"]))
        elif kind == "input_audio_buffer.commit" and self.conn.query.get("intent"):
            self.transcribe()
        elif kind == "response.create":
            if self.call is not None:  # a call's response reaches every sideband of it
                self.fake.respond(self.call.id)
            else:
                self.answer(USAGE)
        elif kind == "test.drop":
            self.close(1011, "upstream going away")
        elif kind == "test.binary":
            self.write_message(b"\x00\x01binary", binary=True)

    def answer(self, usage: dict[str, Any]) -> None:
        marker = str(self.session.get("instructions", ""))
        rid = "resp_" + secrets.token_hex(4)
        self.emit(
            {
                "type": "response.created",
                "response": {
                    "id": rid,
                    "object": "realtime.response",
                    "status": "in_progress",
                    "output": [],
                },
            }
        )
        self.emit(
            {
                "type": "response.output_audio.delta",
                "response_id": rid,
                "item_id": "item_1",
                "output_index": 0,
                "content_index": 0,
                "delta": base64.b64encode(marker.encode()).decode(),
            }
        )
        self.emit(
            {
                "type": "response.output_audio_transcript.delta",
                "response_id": rid,
                "item_id": "item_1",
                "output_index": 0,
                "content_index": 0,
                "delta": f"{marker} heard {self.audio} bytes",
            }
        )
        self.emit(
            {
                "type": "response.done",
                "response": {
                    "id": rid,
                    "object": "realtime.response",
                    "status": "completed",
                    "output": [],
                    "usage": usage,
                },
            }
        )

    def transcribe(self) -> None:
        """A transcription session's turn: whisper-1 is billed by duration, the GPT
        transcription models by tokens (as OpenAI reports them)."""
        model = ((self.session.get("audio") or {}).get("input") or {}).get("transcription", {})
        name = model.get("model") if isinstance(model, dict) else None
        usage: dict[str, Any] = (
            {"type": "duration", "seconds": 2.5}
            if name == "whisper-1"
            else {
                "type": "tokens",
                "input_tokens": 120,
                "output_tokens": 8,
                "total_tokens": 128,
                "input_token_details": {"audio_tokens": 100, "text_tokens": 20},
            }
        )
        self.emit(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": "item_" + secrets.token_hex(4),
                "content_index": 0,
                "transcript": f"{name} heard {self.audio} bytes",
                "usage": usage,
            }
        )
        self.audio = 0

    def on_close(self) -> None:
        self.conn.closed = True
        self.conn.close_code = self.close_code


ANSWER = (
    "v=0\r\no=- 4227147428 1719357865 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 0.0.0.0\r\n"
    "t=0 0\r\na=group:BUNDLE 0 1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0 8\r\na=mid:0\r\n"
    "a=setup:active\r\na=rtpmap:111 opus/48000/2\r\n"
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:1\r\n"
)


class CallsEndpoint(tornado.web.RequestHandler):
    """POST /v1/realtime/calls, refusing what OpenAI refuses."""

    def initialize(self, fake: FakeRealtime) -> None:
        self.fake = fake

    def refuse(self, status: int, message: str, param: str | None = None) -> None:
        self.set_status(status)
        self.finish(
            {"error": {"message": message, "type": "invalid_request_error", "param": param}}
        )

    def post(self) -> None:
        if self.request.headers.get("Authorization") != f"Bearer {API_KEY}":
            self.refuse(401, "Incorrect API key provided.")
            return
        kind = self.request.headers.get("Content-Type", "").split(";")[0].strip()
        session: dict[str, Any] = {}
        if kind == "application/sdp":
            sdp = self.request.body.decode()
        elif kind == "multipart/form-data":
            args: dict[str, list[bytes]] = {}
            files: dict[str, list[Any]] = {}
            tornado.httputil.parse_body_arguments(
                self.request.headers["Content-Type"], self.request.body, args, files
            )
            if "sdp" not in args:
                self.refuse(400, "Missing required parameter: 'sdp'.", "sdp")
                return
            sdp = args["sdp"][0].decode()
            if "session" in args:
                session = json.loads(args["session"][0])
        else:
            self.refuse(400, "Unsupported content type.")
            return
        if not sdp.startswith("v=0") or "\nm=" not in sdp:
            self.refuse(400, "Invalid SDP offer.", "sdp")
            return
        if session.get("type") != "realtime" or not session.get("model"):
            self.refuse(400, "session.type and session.model are required.", "session")
            return
        call = Call(
            "rtc_up_" + secrets.token_hex(8),
            sdp,
            session,
            {k.lower(): v for k, v in self.request.headers.items()},
        )
        self.fake.calls[call.id] = call
        self.set_status(201)
        self.set_header("Content-Type", "application/sdp")
        self.set_header("Location", f"/v1/realtime/calls/{call.id}")
        self.finish(ANSWER)


class HangupEndpoint(tornado.web.RequestHandler):
    def initialize(self, fake: FakeRealtime) -> None:
        self.fake = fake

    def post(self, call_id: str) -> None:
        if self.request.headers.get("Authorization") != f"Bearer {API_KEY}":
            raise tornado.web.HTTPError(401)
        call = self.fake.calls.get(call_id)
        if call is None:
            raise tornado.web.HTTPError(404)
        call.hung_up = True
        for peer in call.peers:
            if peer.ws_connection is not None:
                peer.close(1000, "call ended")
        self.finish(b"")
