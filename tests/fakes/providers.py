"""Fake upstream providers: a real HTTP server on loopback speaking each provider's wire
format (OpenAI, Azure OpenAI, Anthropic Messages, Gemini), recording what it receives.

Behaviour is scripted per request with ``fake.then(...)`` directives, consumed in order:
  status/body/headers  answer with that error;
  delay                seconds before the response headers (slow first byte);
  drop_after           stream N events, then cut the connection;
  malformed            stream one event that is not JSON;
  chunk_delay          seconds between streamed events;
  text                 the assistant's reply;
  for_model            apply only to requests for this upstream model (others skip it).
Without a directive the answer is "Hello from the fake" with fixed usage.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import tornado.httpserver
import tornado.httputil
import tornado.web
from tornado.iostream import StreamClosedError

from tests.conftest import free_port

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


@dataclass
class FakeProviders:
    requests: list[Seen] = field(default_factory=list)
    script: deque[dict[str, Any]] = field(default_factory=deque)
    server: tornado.httpserver.HTTPServer | None = None
    port: int = 0
    disconnected: int = 0  # streams whose client (the gateway) went away mid-way
    speech_done: asyncio.Event = field(default_factory=asyncio.Event)  # last audio chunk sent

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def then(self, **directive: Any) -> FakeProviders:
        self.script.append(directive)
        return self

    def next_directive(self, model: str | None) -> dict[str, Any]:
        for directive in self.script:
            if directive.get("for_model") in (None, model):
                self.script.remove(directive)
                return directive
        return {}

    async def start(self) -> None:
        app = tornado.web.Application(
            [
                (r"/v1/chat/completions", OpenAIChat, {"fake": self}),
                (r"/v1/completions", OpenAICompletions, {"fake": self}),
                (r"/v1/embeddings", OpenAIEmbeddings, {"fake": self}),
                (r"/openai/deployments/([^/]+)/chat/completions", AzureChat, {"fake": self}),
                (r"/openai/deployments/([^/]+)/embeddings", AzureEmbeddings, {"fake": self}),
                (r"/v1/images/generations", OpenAIImages, {"fake": self}),
                (r"/openai/deployments/([^/]+)/images/generations", AzureImages, {"fake": self}),
                (r"/v1/audio/(transcriptions|translations)", OpenAIAudioText, {"fake": self}),
                (
                    r"/openai/deployments/([^/]+)/audio/(transcriptions|translations)",
                    AzureAudioText,
                    {"fake": self},
                ),
                (r"/v1/audio/speech", OpenAISpeech, {"fake": self}),
                (r"/openai/deployments/([^/]+)/audio/speech", AzureSpeech, {"fake": self}),
                (r"/v1/messages", AnthropicMessages, {"fake": self}),
                (r"/v1beta/models/([^/:]+):(\w+)", GeminiMethod, {"fake": self}),
            ]
        )
        self.port = free_port()
        self.server = tornado.httpserver.HTTPServer(app)
        self.server.listen(self.port, "127.0.0.1")

    async def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            await self.server.close_all_connections()


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
        return bool(body.get("tools")) and choice not in (None, "auto", "none", {"type": "auto"})

    async def send_events(self, events: list[bytes], done: bytes | None = None) -> None:
        """Write SSE frames one by one, honouring drop_after / malformed / chunk_delay."""
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
                await self.flush()
                if self.directive.get("chunk_delay"):
                    await asyncio.sleep(self.directive["chunk_delay"])
            if done:
                self.write(done)
            self.finish()
        except StreamClosedError:
            self.fake.disconnected += 1


def sse(obj: Any, event: str | None = None, crlf: bool = False) -> bytes:
    nl = "\r\n" if crlf else "\n"
    head = f"event: {event}{nl}" if event else ""
    return f"{head}data: {json.dumps(obj)}{nl}{nl}".encode()


# -- OpenAI and Azure ------------------------------------------------------------------------


class OpenAIChat(FakeHandler):
    def auth_problem(self) -> str | None:
        if self.request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return "Incorrect API key provided."
        return None

    def upstream_model(self) -> str:
        return str(self.seen.body.get("model"))

    async def post(self, *args: str) -> None:
        body = self.seen.body
        n = int(body.get("n") or 1)
        model = self.upstream_model()
        usage = {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": len(self.words()) * n,
            "total_tokens": PROMPT_TOKENS + len(self.words()) * n,
            "prompt_tokens_details": {"cached_tokens": 0},
        }
        if not body.get("stream"):
            choices = []
            for i in range(n):
                if self.wants_tool():
                    message = {
                        "role": "assistant",
                        "content": None,
                        "refusal": None,
                        "tool_calls": [
                            {
                                "id": "call_fake1",
                                "type": "function",
                                "function": {
                                    "name": body["tools"][0]["function"]["name"],
                                    "arguments": "".join(TOOL_ARGS),
                                },
                            }
                        ],
                    }
                    finish = "tool_calls"
                else:
                    message = {"role": "assistant", "content": self.text(), "refusal": None}
                    finish = "stop"
                choices.append(
                    {"index": i, "message": message, "logprobs": None, "finish_reason": finish}
                )
            self.finish(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": choices,
                    "usage": usage,
                    "system_fingerprint": "fp_fake",
                }
            )
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_fake",
        }
        if include_usage:
            base["usage"] = None
        events = []
        for i in range(n):
            events.append(
                sse(
                    {
                        **base,
                        "choices": [
                            {
                                "index": i,
                                "delta": {"role": "assistant", "content": ""},
                                "logprobs": None,
                                "finish_reason": None,
                            }
                        ],
                    }
                )
            )
            if self.wants_tool():
                name = body["tools"][0]["function"]["name"]
                events.append(
                    sse(
                        {
                            **base,
                            "choices": [
                                {
                                    "index": i,
                                    "delta": {
                                        "tool_calls": [
                                            {
                                                "index": 0,
                                                "id": "call_fake1",
                                                "type": "function",
                                                "function": {"name": name, "arguments": ""},
                                            }
                                        ]
                                    },
                                    "logprobs": None,
                                    "finish_reason": None,
                                }
                            ],
                        }
                    )
                )
                for piece in TOOL_ARGS:
                    events.append(
                        sse(
                            {
                                **base,
                                "choices": [
                                    {
                                        "index": i,
                                        "delta": {
                                            "tool_calls": [
                                                {"index": 0, "function": {"arguments": piece}}
                                            ]
                                        },
                                        "logprobs": None,
                                        "finish_reason": None,
                                    }
                                ],
                            }
                        )
                    )
                finish = "tool_calls"
            else:
                for word in self.words():
                    events.append(
                        sse(
                            {
                                **base,
                                "choices": [
                                    {
                                        "index": i,
                                        "delta": {"content": word},
                                        "logprobs": None,
                                        "finish_reason": None,
                                    }
                                ],
                            }
                        )
                    )
                finish = "stop"
            events.append(
                sse(
                    {
                        **base,
                        "choices": [
                            {"index": i, "delta": {}, "logprobs": None, "finish_reason": finish}
                        ],
                    }
                )
            )
        if include_usage:
            events.append(sse({**base, "choices": [], "usage": usage}))
        await self.send_events(events, b"data: [DONE]\n\n")


class AzureChat(OpenAIChat):
    def auth_problem(self) -> str | None:
        if self.request.headers.get("api-key") != API_KEY:
            return "Access denied due to invalid subscription key."
        if not self.seen.query.get("api-version"):
            return "Missing api-version"
        return None

    def upstream_model(self) -> str:
        return "gpt-4o-2024-08-06"  # Azure answers with the model behind the deployment

    async def prepare(self) -> None:
        await super().prepare()


class OpenAICompletions(OpenAIChat):
    async def post(self, *args: str) -> None:
        body = self.seen.body
        model = self.upstream_model()
        usage = {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": len(self.words()),
            "total_tokens": PROMPT_TOKENS + len(self.words()),
        }
        if not body.get("stream"):
            self.finish(
                {
                    "id": "cmpl-fake",
                    "object": "text_completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {"text": self.text(), "index": 0, "logprobs": None, "finish_reason": "stop"}
                    ],
                    "usage": usage,
                }
            )
            return
        base = {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
        }
        events = [
            sse(
                {
                    **base,
                    "choices": [{"text": w, "index": 0, "logprobs": None, "finish_reason": None}],
                }
            )
            for w in self.words()
        ]
        events.append(
            sse(
                {
                    **base,
                    "choices": [
                        {"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"}
                    ],
                }
            )
        )
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(sse({**base, "choices": [], "usage": usage}))
        await self.send_events(events, b"data: [DONE]\n\n")


def fake_vector(text: str, dims: int) -> list[float]:
    return [round((hash((text, i)) % 1000) / 1000, 3) for i in range(dims)]


class OpenAIEmbeddings(OpenAIChat):
    async def post(self, *args: str) -> None:
        body = self.seen.body
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        if inputs and isinstance(inputs[0], int):
            inputs = [inputs]
        dims = int(body.get("dimensions") or 4)
        data = []
        for i in range(len(inputs)):
            vector = [0.5 + i, -0.25, 0.125, 1.0][:dims] + [0.0] * max(0, dims - 4)
            embedding: Any = vector
            if body.get("encoding_format") == "base64":
                embedding = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": embedding})
        tokens = 3 * len(inputs)
        self.finish(
            {
                "object": "list",
                "data": data,
                "model": self.upstream_model(),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )


class AzureEmbeddings(OpenAIEmbeddings, AzureChat):
    pass


# -- Images and audio (OpenAI and Azure) ---------------------------------------------------

PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
TRANSCRIPT = "The quick brown fox."
SPEECH_CHUNKS = [bytes([i]) * 4000 for i in range(5)]


class OpenAIImages(OpenAIChat):
    async def post(self, *args: str) -> None:
        body = self.seen.body
        n = int(body.get("n") or 1)
        if body.get("response_format") == "b64_json":
            item = {"b64_json": PIXEL, "revised_prompt": body["prompt"]}
        else:
            item = {"url": "https://images.example.test/fake.png", "revised_prompt": body["prompt"]}
        self.finish({"created": int(time.time()), "data": [item] * n})


class AzureImages(OpenAIImages, AzureChat):
    pass


class OpenAIAudioText(OpenAIChat):
    async def post(self, *args: str) -> None:
        body = self.seen.body
        if not isinstance(body.get("file"), dict) or not body.get("model"):
            self.set_status(400)
            self.finish({"error": {"message": "file and model are required"}})
            return
        fmt = body.get("response_format", "json")
        if fmt == "text":
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish(TRANSCRIPT + "\n")
        elif fmt in ("srt", "vtt"):
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            head = "WEBVTT\n\n" if fmt == "vtt" else "1\n"
            self.finish(f"{head}00:00:00,000 --> 00:00:02,500\n{TRANSCRIPT}\n")
        elif fmt == "verbose_json":
            self.finish(
                {
                    "task": "transcribe",
                    "language": "english",
                    "duration": 2.5,
                    "text": TRANSCRIPT,
                    "segments": [
                        {
                            "id": 0,
                            "seek": 0,
                            "start": 0.0,
                            "end": 2.5,
                            "text": TRANSCRIPT,
                            "tokens": [1, 2],
                            "temperature": 0.0,
                            "avg_logprob": -0.1,
                            "compression_ratio": 1.0,
                            "no_speech_prob": 0.0,
                        }
                    ],
                }
            )
        else:
            self.finish({"text": TRANSCRIPT})


class AzureAudioText(OpenAIAudioText, AzureChat):
    pass


class OpenAISpeech(OpenAIChat):
    async def post(self, *args: str) -> None:
        fmt = self.seen.body.get("response_format", "mp3")
        self.set_header(
            "Content-Type",
            {"mp3": "audio/mpeg", "wav": "audio/wav"}.get(fmt, "application/octet-stream"),
        )
        try:
            for chunk in SPEECH_CHUNKS:
                self.write(chunk)
                await self.flush()
                await asyncio.sleep(self.directive.get("chunk_delay", 0.05))
            self.fake.speech_done.set()
            self.finish()
        except StreamClosedError:
            self.fake.disconnected += 1


class AzureSpeech(OpenAISpeech, AzureChat):
    pass


# -- Anthropic ---------------------------------------------------------------------------------


class AnthropicMessages(FakeHandler):
    def auth_problem(self) -> str | None:
        if self.request.headers.get("x-api-key") != API_KEY:
            return "invalid x-api-key"
        if not self.request.headers.get("anthropic-version"):
            return "anthropic-version header is required"
        return None

    async def post(self) -> None:
        body = self.seen.body
        if "max_tokens" not in body or not body.get("messages"):
            self.set_status(400)
            self.finish(
                {
                    "type": "error",
                    "error": {
                        "type": "invalid_request_error",
                        "message": "max_tokens: Field required",
                    },
                }
            )
            return
        model = body["model"]
        tool = self.wants_tool()
        usage = {
            "input_tokens": PROMPT_TOKENS,
            "output_tokens": len(self.words()),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        tool_block = (
            {
                "type": "tool_use",
                "id": "toolu_fake1",
                "name": body["tools"][0]["name"],
                "input": {"city": "Paris"},
            }
            if tool
            else None
        )
        if not body.get("stream"):
            content = [tool_block] if tool_block else [{"type": "text", "text": self.text()}]
            self.finish(
                {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": "tool_use" if tool else "end_turn",
                    "stop_sequence": None,
                    "usage": usage,
                }
            )
            return
        events = [
            sse(
                {
                    "type": "message_start",
                    "message": {
                        "id": "msg_fake",
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {
                            "input_tokens": PROMPT_TOKENS,
                            "output_tokens": 1,
                            "cache_creation_input_tokens": 0,
                            "cache_read_input_tokens": 0,
                        },
                    },
                },
                "message_start",
            )
        ]
        if tool_block:
            events.append(
                sse(
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {
                            "type": "tool_use",
                            "id": "toolu_fake1",
                            "name": tool_block["name"],
                            "input": {},
                        },
                    },
                    "content_block_start",
                )
            )
            events.append(sse({"type": "ping"}, "ping"))
            for piece in TOOL_ARGS:
                events.append(
                    sse(
                        {
                            "type": "content_block_delta",
                            "index": 0,
                            "delta": {"type": "input_json_delta", "partial_json": piece},
                        },
                        "content_block_delta",
                    )
                )
        else:
            events.append(
                sse(
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                    "content_block_start",
                )
            )
            events.append(sse({"type": "ping"}, "ping"))
            for word in self.words():
                events.append(
                    sse(
                        {
                            "type": "content_block_delta",
                            "index": 0,
                            "delta": {"type": "text_delta", "text": word},
                        },
                        "content_block_delta",
                    )
                )
        events.append(sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
        events.append(
            sse(
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": "tool_use" if tool else "end_turn",
                        "stop_sequence": None,
                    },
                    "usage": {"output_tokens": len(self.words())},
                },
                "message_delta",
            )
        )
        events.append(sse({"type": "message_stop"}, "message_stop"))
        await self.send_events(events)


# -- Gemini ------------------------------------------------------------------------------------


class GeminiMethod(FakeHandler):
    def auth_problem(self) -> str | None:
        if self.request.headers.get("x-goog-api-key") != API_KEY:
            return "API key not valid. Please pass a valid API key."
        return None

    def usage(self) -> dict[str, int]:
        words = len(self.words())
        return {
            "promptTokenCount": PROMPT_TOKENS,
            "candidatesTokenCount": words,
            "totalTokenCount": PROMPT_TOKENS + words,
        }

    async def post(self, model: str, method: str) -> None:
        body = self.seen.body
        if method == "batchEmbedContents":
            self.finish({"embeddings": [{"values": [0.1, 0.2, 0.3]} for _ in body["requests"]]})
            return
        if not body.get("contents"):
            self.set_status(400)
            self.finish(
                {
                    "error": {
                        "code": 400,
                        "message": "contents is required",
                        "status": "INVALID_ARGUMENT",
                    }
                }
            )
            return
        count = int((body.get("generationConfig") or {}).get("candidateCount") or 1)
        tool = self.wants_tool()
        fn = body["tools"][0]["functionDeclarations"][0]["name"] if tool else None
        if method == "generateContent":
            parts = (
                [{"functionCall": {"name": fn, "args": {"city": "Paris"}}}]
                if tool
                else [{"text": self.text()}]
            )
            self.finish(
                {
                    "candidates": [
                        {
                            "content": {"role": "model", "parts": parts},
                            "finishReason": "STOP",
                            "index": i,
                        }
                        for i in range(count)
                    ],
                    "usageMetadata": self.usage(),
                    "modelVersion": model,
                    "responseId": "fake-response",
                }
            )
            return
        assert method == "streamGenerateContent" and self.seen.query.get("alt") == "sse"
        events = []
        if tool:
            events.append(
                sse(
                    {
                        "candidates": [
                            {
                                "content": {
                                    "role": "model",
                                    "parts": [
                                        {"functionCall": {"name": fn, "args": {"city": "Paris"}}}
                                    ],
                                },
                                "finishReason": "STOP",
                                "index": 0,
                            }
                        ],
                        "usageMetadata": self.usage(),
                        "modelVersion": model,
                    },
                    crlf=True,
                )
            )
        else:
            words = self.words()
            for i, word in enumerate(words):
                last = i == len(words) - 1
                frame: dict[str, Any] = {
                    "candidates": [
                        {
                            "content": {"role": "model", "parts": [{"text": word}]},
                            **({"finishReason": "STOP"} if last else {}),
                            "index": 0,
                        }
                    ],
                    "modelVersion": model,
                }
                frame["usageMetadata"] = (
                    self.usage() if last else {"promptTokenCount": PROMPT_TOKENS}
                )
                events.append(sse(frame, crlf=True))
        await self.send_events(events)
