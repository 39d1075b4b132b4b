"""What an upstream model can do, from its name: chat, embeddings, images, audio, realtime,
moderations or rerank. /v1/models lists a virtual model's capabilities from what its
deployments' upstream models can do, so a mapping to gpt-4o does not claim embeddings or
images just because its provider (OpenAI) serves them for other models.

The bundled price tables know the models the gateway prices (data/prices.json: models
priced per token; data/media_prices.json: per image, audio minute, speech character or
realtime session); names they lack are judged by the words model names carry (embed,
rerank, whisper, tts, ...). A name neither knows (an Azure deployment's own name, a local
Ollama model) is unknown: its provider type's capabilities stand in.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

# Chat models serve the chat routes and those translated to chat.
CHAT = frozenset({"chat", "responses", "completions"})
EMBEDDINGS = frozenset({"embeddings"})
# Words in model names and what they mean, checked in this order (first match wins):
# "gpt-4o-mini-tts" is speech, not chat; "text-embedding-3-small" embeddings.
_WORDS: tuple[tuple[tuple[str, ...], frozenset[str]], ...] = (
    (("rerank",), frozenset({"rerank"})),
    (("moderation",), frozenset({"moderations"})),
    (("embed",), EMBEDDINGS),
    (("transcribe",), frozenset({"audio", "realtime"})),  # realtime transcription sessions
    (("whisper", "tts"), frozenset({"audio"})),
    (("realtime",), frozenset({"realtime"})),
    (("dall-e", "gpt-image", "imagen"), frozenset({"images"})),
    (("instruct",), frozenset({"completions"})),
)


def _by_words(name: str) -> frozenset[str] | None:
    lowered = name.lower()
    for words, kinds in _WORDS:
        if any(word in lowered for word in words):
            return kinds
    return None


def _media_kinds(entry: dict[str, Any]) -> frozenset[str]:
    kinds: set[str] = set()
    if "per_image" in entry:
        kinds.add("images")
    if "per_minute" in entry or "per_1k_chars" in entry:
        kinds.add("audio")
    if "realtime" in entry:
        kinds.add("realtime")
    return frozenset(kinds)


def _bundled(path: str) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads(
        resources.files("conduit_tornado").joinpath(path).read_text(encoding="utf-8")
    )
    return {k: v for k, v in raw.items() if not k.startswith("_")}


@functools.cache
def _known() -> tuple[dict[str, frozenset[str]], tuple[str, ...]]:
    """Every model the price tables name, with what it can do; and the names longest
    first (for dated snapshots)."""
    known: dict[str, frozenset[str]] = {}
    for name in _bundled("data/prices.json"):  # priced per token: chat, else by its words
        known[name] = _by_words(name) or CHAT
    for name, entry in _bundled("data/media_prices.json").items():
        known[name] = _media_kinds(entry) or _by_words(name) or frozenset()
    return known, tuple(sorted(known, key=len, reverse=True))


@functools.lru_cache(maxsize=4096)
def model_kinds(model: str) -> frozenset[str] | None:
    """What the upstream model ``model`` can do; None if it is not known (then its
    provider type says). Matched as prices are: exact name, then the longest known name
    it extends ("gpt-4o-2024-08-06" is "gpt-4o"; its words first), then its words."""
    name = model.rsplit("/", 1)[-1]  # "openai/gpt-4o" style names
    known, longest_first = _known()
    if name in known:
        return known[name]
    for candidate in longest_first:
        if name.startswith(candidate + "-") or name.startswith(candidate + "@"):
            # A variant's own words say more than the family it extends: a future
            # "gpt-5-realtime" is a realtime model, not gpt-5's chat.
            return _by_words(name) or known[candidate]
    return _by_words(name)
