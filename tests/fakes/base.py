"""What every fake provider shares: scripted directives, recorded requests, SSE framing.
See tests/fakes/providers.py for the server that mounts them."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import tornado.httpserver
import tornado.httputil
import tornado.web
from tornado.iostream import StreamClosedError

from tests.conftest import free_port

if TYPE_CHECKING:
    from tests.fakes.providers import FakeProviders

API_KEY = "sk-fake-upstream-key"
PROMPT_TOKENS = 11
WORDS = ["Hello", " from", " the", " fake"]
TOOL_ARGS = ['{"city": ', '"Paris"}']


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    body: dict[str, Any]


class FakeHandler(tornado.web.RequestHandler):
    fake: FakeProviders

    def initialize(self, fake: FakeProviders) -> None:
        self.fake = fake

    def check_xsrf_cookie(self) -> None:
        return None

    async def prepare(self) -> None:
        if self.request.headers.get("Content-Type", "").startswith("multipart/form-data"):
            args: dict[str, list[bytes]] = {}
            files: dict[str, list[Any]] = {}
            tornado.httputil.parse_body_arguments(
                self.request.headers["Content-Type"], self.request.body, args, files
            )
            body: dict[str, Any] = {
                k: [v.decode() for v in vs] if len(vs) > 1 else vs[0].decode()
                for k, vs in args.items()
            }
            for name, items in files.items():
                body[name] = {
                    "filename": items[0].filename,
                    "content_type": items[0].content_type,
                    "bytes": items[0].body,
                }
        else:
            body = json.loads(self.request.body or b"{}")
        self.seen = Seen(
            self.request.path,
            {k.lower(): v for k, v in self.request.headers.items()},
            {k: self.get_query_argument(k) for k in self.request.query_arguments},
            body,
        )
        self.fake.requests.append(self.seen)
        model = body.get("model") or (self.path_args[0] if self.path_args else None)
        self.directive = self.fake.next_directive(model)
        if self.directive.get("delay"):
            await asyncio.sleep(self.directive["delay"])
        if "status" in self.directive:
            self.set_status(self.directive["status"])
            for name, value in (self.directive.get("headers") or {}).items():
                self.set_header(name, value)
            self.finish(
                json.dumps(self.directive.get("body") or {"error": {"message": "scripted failure"}})
            )
            return
        problem = self.auth_problem()
        if problem:
            self.set_status(401)
            self.finish(
                json.dumps({"error": {"message": problem, "type": "invalid_request_error"}})
            )

    def auth_problem(self) -> str | None:
        return None

    def text(self) -> str:
        return str(self.directive.get("text", "".join(WORDS)))

    def words(self) -> list[str]:
        if "text" in self.directive:
            words = str(self.directive["text"]).split(" ")
            return [w if i == 0 else " " + w for i, w in enumerate(words)]
        return WORDS

    def wants_tool(self) -> bool:
        body = self.seen.body
        choice = body.get("tool_choice") or body.get("toolConfig")
        idle = (None, "auto", "none", {"type": "auto"}, {"type": "none"})
        return bool(body.get("tools")) and choice not in idle

    async def send_events(self, events: list[bytes], done: bytes | None = None) -> None:
        """Write SSE frames one by one, honouring drop_after / malformed / chunk_delay /
        hold_after_first (wait for ``fake.release`` after the first frame) / burst (all
        frames in one write)."""
        self.set_header("Content-Type", "text/event-stream")
        drop_after = self.directive.get("drop_after")
        try:
            for i, frame in enumerate(events):
                if drop_after is not None and i == drop_after:
                    self.request.connection.stream.close()  # type: ignore[union-attr]
                    return
                if self.directive.get("malformed") and i == 1:
                    frame = b"data: {this is not json\n\n"
                self.write(frame)
                if self.directive.get("burst"):
                    continue  # every frame in one write, so they arrive in one read
                await self.flush()
                if i == getattr(self, "hold_index", 0) and self.directive.get("hold_after_first"):
                    await self.fake.release.wait()  # the test lets the rest go
                if self.directive.get("chunk_delay"):
                    await asyncio.sleep(self.directive["chunk_delay"])
            if done:
                self.write(done)
            self.finish()
        except StreamClosedError:
            self.fake.disconnected += 1


class Loopback:
    """A fake served over real HTTP on a free loopback port."""

    server: tornado.httpserver.HTTPServer | None
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def listen(self, app: tornado.web.Application) -> None:
        self.port = free_port()
        self.server = tornado.httpserver.HTTPServer(app)
        self.server.listen(self.port, "127.0.0.1")

    async def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            await self.server.close_all_connections()


def sse(obj: Any, event: str | None = None, crlf: bool = False) -> bytes:
    nl = "\r\n" if crlf else "\n"
    head = f"event: {event}{nl}" if event else ""
    return f"{head}data: {json.dumps(obj)}{nl}{nl}".encode()
