"""Fake OpenAI and Azure OpenAI: chat, completions, embeddings, images, audio."""

from __future__ import annotations

import asyncio
import base64
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

from tornado.iostream import StreamClosedError

from tests.fakes import sdk_types
from tests.fakes.base import API_KEY, PROMPT_TOKENS, TOOL_ARGS, FakeHandler, sse

# -- OpenAI and Azure ------------------------------------------------------------------------


class OpenAIChat(FakeHandler):
    #: openai-python's request type for this endpoint, as a check (None: not checked).
    sdk_check: Callable[[dict[str, Any]], list[str]] | None = staticmethod(sdk_types.openai_chat)

    async def prepare(self) -> None:
        await super().prepare()
        if self._finished or self.sdk_check is None or not isinstance(self.seen.body, dict):
            return
        if self.request.headers.get("Content-Type", "").startswith("multipart/"):
            return
        # What the SDK's own types refuse (unknown fields, wrong types); Azure names the
        # deployment in the path, so its body may leave out the model.
        body = {"model": self.upstream_model(), **self.seen.body}
        for problem in self.sdk_check(body):
            refused = problem.removeprefix("body.")
            self.set_status(400)
            self.finish(
                {
                    "error": {
                        "message": f"Invalid request: {refused}",
                        "type": "invalid_request_error",
                        "param": refused.split(":")[0],
                        "code": None,
                    }
                }
            )
            return

    def auth_problem(self) -> str | None:
        if self.request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return "Incorrect API key provided."
        return None

    def upstream_model(self) -> str:
        return str(self.seen.body.get("model"))

    def prelude(self) -> list[bytes]:
        return []

    def choice_extra(self) -> dict[str, Any]:
        return {}

    def logprobs(self, words: list[str]) -> dict[str, Any] | None:
        """Per-token log probabilities, when the request asked for them."""
        if not self.seen.body.get("logprobs") or not words:
            return None
        return {
            "content": [
                {"token": w, "logprob": -0.25, "bytes": list(w.encode()), "top_logprobs": []}
                for w in words
            ],
            "refusal": None,
        }

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
        if "audio_tokens" in self.directive:  # an audio model: audio in and out, counted apart
            heard, spoken = self.directive["audio_tokens"]
            usage["prompt_tokens"] += heard
            usage["completion_tokens"] += spoken
            usage["total_tokens"] += heard + spoken
            usage["prompt_tokens_details"] = {"cached_tokens": 0, "audio_tokens": heard}
            usage["completion_tokens_details"] = {"audio_tokens": spoken, "reasoning_tokens": 0}
        refusal = self.directive.get("refusal")
        finish_text = "content_filter" if self.directive.get("filtered") else "stop"
        if not body.get("stream"):
            choices = []
            for i in range(n):
                if refusal:
                    message = {"role": "assistant", "content": None, "refusal": refusal}
                    finish = "stop"
                elif self.wants_tool():
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
                    finish = finish_text
                choices.append(
                    {
                        "index": i,
                        "message": message,
                        "logprobs": self.logprobs(self.words()),
                        "finish_reason": finish,
                        **self.choice_extra(),
                    }
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

        def chunk(
            i: int, delta: dict[str, Any], finish: str | None = None, words: Sequence[str] = ()
        ) -> bytes:
            choice = {
                "index": i,
                "delta": delta,
                "logprobs": self.logprobs(list(words)),
                "finish_reason": finish,
                **self.choice_extra(),
            }
            return sse({**base, "choices": [choice]})

        prelude = self.prelude()
        self.hold_index = len(prelude)  # hold_after_first: after the first chunk with a choice
        per_choice: list[list[bytes]] = []
        for i in range(n):
            events: list[bytes] = []
            per_choice.append(events)
            events.append(chunk(i, {"role": "assistant", "content": ""}))
            if refusal:
                for word in refusal.split(" "):
                    events.append(chunk(i, {"refusal": word + " "}))
                finish = "stop"
            elif self.wants_tool():
                name = body["tools"][0]["function"]["name"]
                call = {
                    "index": 0,
                    "id": "call_fake1",
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }
                events.append(chunk(i, {"tool_calls": [call]}))
                for piece in TOOL_ARGS:
                    events.append(
                        chunk(i, {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                    )
                finish = "tool_calls"
            else:
                for word in self.words():
                    events.append(chunk(i, {"content": word}, words=[word]))
                finish = finish_text
            events.append(chunk(i, {}, finish))
        events = prelude
        if self.directive.get("interleave"):
            # Choices truly interleaved, as OpenAI streams n > 1: one chunk of each in turn.
            longest = max(len(c) for c in per_choice)
            events += [c[j] for j in range(longest) for c in per_choice if j < len(c)]
        else:
            events += [frame for c in per_choice for frame in c]
        if include_usage:
            events.append(sse({**base, "choices": [], "usage": usage}))
        await self.send_events(events, b"data: [DONE]\n\n")


class AzureChat(OpenAIChat):
    def auth_problem(self) -> str | None:
        if self.request.headers.get("api-key") != API_KEY:
            return "Access denied due to invalid subscription key."
        version = self.seen.query.get("api-version")
        if not version:
            return "Missing api-version"
        return None

    async def post(self, *args: str) -> None:
        # stream_options arrived with 2024-09-01-preview; older versions refuse it.
        if "stream_options" in self.seen.body and self.seen.query["api-version"] < "2024-09-01":
            self.set_status(400)
            self.finish(
                {
                    "error": {
                        "message": "Unrecognized request argument supplied: stream_options",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                }
            )
            return
        await super().post(*args)

    def prelude(self) -> list[bytes]:
        """Azure's first stream chunk: its prompt filter results, no choices, no model."""
        filters = {"hate": {"filtered": False, "severity": "safe"}}
        return [
            sse(
                {
                    "id": "",
                    "object": "",
                    "created": 0,
                    "model": "",
                    "choices": [],
                    "prompt_filter_results": [
                        {"prompt_index": 0, "content_filter_results": filters}
                    ],
                }
            )
        ]

    def choice_extra(self) -> dict[str, Any]:
        """Azure annotates each choice with its content filter's verdicts."""
        filtered = bool(self.directive.get("filtered"))
        verdict = {"filtered": filtered, "severity": "high" if filtered else "safe"}
        return {
            "content_filter_results": {
                "hate": {"filtered": False, "severity": "safe"},
                "violence": verdict,
            }
        }

    def upstream_model(self) -> str:
        return "gpt-4o-2024-08-06"  # Azure answers with the model behind the deployment

    async def prepare(self) -> None:
        await super().prepare()


class OpenAICompletions(OpenAIChat):
    sdk_check = staticmethod(sdk_types.openai_completion)

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
    sdk_check = staticmethod(sdk_types.openai_embedding)

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
    sdk_check = staticmethod(sdk_types.openai_image)

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
    sdk_check = None  # multipart: checked field by field below

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
    sdk_check = staticmethod(sdk_types.openai_speech)

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
