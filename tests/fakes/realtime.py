"""A fake realtime provider: a WebSocket server on loopback speaking the current event
names, for OpenAI (/v1/realtime?model=) and Azure (/openai/realtime?deployment=).

Its audio and transcript echo the session's instructions, so cross-talk between sessions
shows. Extra client events for tests: ``test.drop`` (closes 1011), ``test.binary``.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

import tornado.httpserver
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
class FakeRealtime(Loopback):
    conns: list[Conn] = field(default_factory=list)
    port: int = 0
    server: tornado.httpserver.HTTPServer | None = None

    async def start(self) -> None:
        app = tornado.web.Application(
            [
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
                and self.get_query_argument("model", None)
            )
        )
        if not ok:
            raise tornado.web.HTTPError(401)

    def open(self) -> None:
        self.conn = Conn(
            self.request.path,
            {k: self.get_query_argument(k) for k in self.request.query_arguments},
            {k.lower(): v for k, v in self.request.headers.items()},
        )
        self.fake.conns.append(self.conn)
        model = self.get_query_argument("deployment" if self.azure else "model")
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
        elif kind == "response.create":
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
                        "usage": USAGE,
                    },
                }
            )
        elif kind == "test.drop":
            self.close(1011, "upstream going away")
        elif kind == "test.binary":
            self.write_message(b"\x00\x01binary", binary=True)

    def on_close(self) -> None:
        self.conn.closed = True
        self.conn.close_code = self.close_code
