"""Fake upstream providers: a real HTTP server on loopback speaking each provider's wire
format (OpenAI, Azure OpenAI, Anthropic Messages, Gemini), recording what it receives.

Behaviour is scripted per request with ``fake.then(...)`` directives, consumed in order:
  status/body/headers  answer with that error;
  delay                seconds before the response headers (slow first byte);
  drop_after           stream N events, then cut the connection;
  malformed            stream one event that is not JSON;
  chunk_delay          seconds between streamed events;
  burst                stream every event in one write (they arrive in one read);
  text                 the assistant's reply;
  for_model            apply only to requests for this upstream model (others skip it).
Without a directive the answer is "Hello from the fake" with fixed usage.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import tornado.httpserver
import tornado.web

from tests.fakes.base import API_KEY, PROMPT_TOKENS, Loopback, Seen
from tests.fakes.openai import PIXEL, SPEECH_CHUNKS, TRANSCRIPT

__all__ = [
    "API_KEY",
    "PIXEL",
    "PROMPT_TOKENS",
    "SPEECH_CHUNKS",
    "TRANSCRIPT",
    "FakeProviders",
    "Seen",
]


@dataclass
class FakeProviders(Loopback):
    requests: list[Seen] = field(default_factory=list)
    responses: dict[str, Any] = field(default_factory=dict)  # what the Responses fake keeps
    script: deque[dict[str, Any]] = field(default_factory=deque)
    server: tornado.httpserver.HTTPServer | None = None
    port: int = 0
    disconnected: int = 0  # streams whose client (the gateway) went away mid-way
    speech_done: asyncio.Event = field(default_factory=asyncio.Event)  # last audio chunk sent
    release: asyncio.Event = field(default_factory=asyncio.Event)  # see hold_after_first

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
        from tests.fakes.anthropic import AnthropicMessages
        from tests.fakes.gemini import GeminiMethod
        from tests.fakes.openai import (
            AzureAudioText,
            AzureChat,
            AzureEmbeddings,
            AzureImageEdits,
            AzureImages,
            AzureSpeech,
            OpenAIAudioText,
            OpenAIChat,
            OpenAICompletions,
            OpenAIEmbeddings,
            OpenAIImageEdits,
            OpenAIImages,
            OpenAISpeech,
        )
        from tests.fakes.openai_extra import ModelList, OpenAIModerations, Rerank
        from tests.fakes.openai_responses import OpenAIResponses

        app = tornado.web.Application(
            [
                (r"/v1/chat/completions", OpenAIChat, {"fake": self}),
                (r"/v1/responses", OpenAIResponses, {"fake": self}),
                (r"/v1/moderations", OpenAIModerations, {"fake": self}),
                (r"/v1/rerank", Rerank, {"fake": self}),
                (r"/v1/completions", OpenAICompletions, {"fake": self}),
                (r"/v1/embeddings", OpenAIEmbeddings, {"fake": self}),
                (r"/openai/deployments/([^/]+)/chat/completions", AzureChat, {"fake": self}),
                (r"/openai/deployments/([^/]+)/embeddings", AzureEmbeddings, {"fake": self}),
                (r"/v1/images/generations", OpenAIImages, {"fake": self}),
                (r"/openai/deployments/([^/]+)/images/generations", AzureImages, {"fake": self}),
                (r"/v1/images/(?:edits|variations)", OpenAIImageEdits, {"fake": self}),
                (
                    r"/openai/deployments/([^/]+)/images/(?:edits|variations)",
                    AzureImageEdits,
                    {"fake": self},
                ),
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
                (r"/v1/(models)", ModelList, {"fake": self}),  # OpenAI's and Anthropic's
                (r"/openai/(models)", ModelList, {"fake": self}),  # Azure's
                (r"/v1beta/(models)", ModelList, {"fake": self}),  # Gemini's
            ]
        )
        self.listen(app)
