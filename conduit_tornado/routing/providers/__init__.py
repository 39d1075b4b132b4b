"""Provider adapters, one small module each, chosen by the provider's ``type``."""

from __future__ import annotations

from conduit_tornado.routing.catalog import Provider
from conduit_tornado.routing.upstream import Upstream

from .anthropic import AnthropicAdapter
from .base import Adapter, ChunkStream, Usage
from .gemini import GeminiAdapter
from .mock import MockAdapter
from .openai import AzureAdapter, OllamaAdapter, OpenAIAdapter

ADAPTERS: dict[str, type[Adapter]] = {
    "openai": OpenAIAdapter,
    "azure": AzureAdapter,
    "ollama": OllamaAdapter,
    "anthropic": AnthropicAdapter,
    "gemini": GeminiAdapter,
    "mock": MockAdapter,
}


def make_adapter(provider: Provider, upstream: Upstream) -> Adapter:
    return ADAPTERS[provider.type](provider, upstream)


__all__ = ["ADAPTERS", "Adapter", "ChunkStream", "Usage", "make_adapter"]
