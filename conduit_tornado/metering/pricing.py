"""Cost of a request from its token usage: overrides first, then the bundled table.

A model with no price is reported as unpriced (cost None), never silently free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from conduit_tornado.routing.providers.base import Usage


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens. Reasoning tokens are output tokens at the output rate (every
    provider counts them in the completion); audio tokens have their own rates where a
    model takes or makes audio, else the text rates."""

    input: float
    output: float
    cached_input: float | None = None
    #: Per million tokens written to a prompt cache; unset: 1.25x input (Anthropic's
    #: five-minute cache writes).
    cache_write: float | None = None
    #: Written for an hour; unset: 2x input (Anthropic's one-hour cache writes).
    cache_write_1h: float | None = None
    audio_input: float | None = None
    audio_output: float | None = None

    def cost(self, usage: Usage) -> float:
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        written = min(usage.cache_write_tokens, usage.prompt_tokens - cached)
        hour = min(usage.cache_write_1h_tokens, written)
        audio_in = min(usage.audio_prompt_tokens, usage.prompt_tokens - cached - written)
        audio_out = min(usage.audio_completion_tokens, usage.completion_tokens)
        cached_rate = self.input if self.cached_input is None else self.cached_input
        write_rate = self.input * 1.25 if self.cache_write is None else self.cache_write
        hour_rate = self.input * 2 if self.cache_write_1h is None else self.cache_write_1h
        audio_in_rate = self.input if self.audio_input is None else self.audio_input
        audio_out_rate = self.output if self.audio_output is None else self.audio_output
        total = (
            (usage.prompt_tokens - cached - written - audio_in) * self.input
            + audio_in * audio_in_rate
            + cached * cached_rate
            + (written - hour) * write_rate
            + hour * hour_rate
            + (usage.completion_tokens - audio_out) * self.output
            + audio_out * audio_out_rate
        )
        return round(total / 1_000_000, 10)


def _price(entry: Any) -> Price:
    """A bundled entry: [input, output, cached input] or an object naming each rate."""
    if isinstance(entry, dict):
        return Price(**entry)
    return Price(*entry)


class PriceTable:
    def __init__(self, table: dict[str, Price]) -> None:
        self._table = table
        self._by_length = sorted(table, key=len, reverse=True)

    @classmethod
    def bundled(cls) -> PriceTable:
        raw = json.loads(
            resources.files("conduit_tornado").joinpath("data/prices.json").read_text()
        )
        return cls({k: _price(v) for k, v in raw.items() if not k.startswith("_")})

    def lookup(self, model: str) -> Price | None:
        name = model.rsplit("/", 1)[-1]  # "openai/gpt-4o" style names
        if name in self._table:
            return self._table[name]
        for known in self._by_length:  # dated snapshots: "gpt-4o-2024-08-06" -> "gpt-4o"
            if name.startswith(known + "-") or name.startswith(known + "@"):
                return self._table[known]
        return None

    def price(self, model: str, *overrides: dict[str, Any] | None) -> Price | None:
        for override in overrides:
            if override:
                return Price(
                    float(override.get("input_per_mtok") or 0),
                    float(override.get("output_per_mtok") or 0),
                    override.get("cached_input_per_mtok"),
                    override.get("cache_write_per_mtok"),
                    override.get("cache_write_1h_per_mtok"),
                    override.get("audio_input_per_mtok"),
                    override.get("audio_output_per_mtok"),
                )
        return self.lookup(model)


class MediaPrices:
    """Prices for work not measured in tokens: images, audio minutes, speech characters."""

    def __init__(self, table: dict[str, dict[str, Any]]) -> None:
        self._table = table

    @classmethod
    def bundled(cls) -> MediaPrices:
        raw = json.loads(
            resources.files("conduit_tornado").joinpath("data/media_prices.json").read_text()
        )
        return cls({k: v for k, v in raw.items() if not k.startswith("_")})

    def _entry(self, model: str, override: dict[str, Any] | None, unit: str) -> Any:
        if override and override.get(unit) is not None:
            return override[unit]
        name = model.rsplit("/", 1)[-1]
        if name not in self._table:  # dated snapshots, as for token prices
            name = next(
                (k for k in sorted(self._table, key=len, reverse=True) if name.startswith(k + "-")),
                name,
            )
        return self._table.get(name, {}).get(unit)

    def image(
        self, model: str, size: str, quality: str, override: dict[str, Any] | None
    ) -> float | None:
        entry = self._entry(model, override, "per_image")
        if isinstance(entry, int | float):
            return float(entry)
        if isinstance(entry, dict):
            price = entry.get(f"{size}/{quality}", entry.get(size))
            return float(price) if price is not None else None
        return None

    def per_minute(self, model: str, override: dict[str, Any] | None) -> float | None:
        entry = self._entry(model, override, "per_minute")
        return float(entry) if entry is not None else None

    def per_1k_chars(self, model: str, override: dict[str, Any] | None) -> float | None:
        entry = self._entry(model, override, "per_1k_chars")
        return float(entry) if entry is not None else None

    def realtime(self, model: str, override: dict[str, Any] | None) -> dict[str, float] | None:
        entry = self._entry(model, override, "realtime")
        return {k: float(v) for k, v in entry.items()} if isinstance(entry, dict) else None


def realtime_cost(rates: dict[str, float], usage: dict[str, Any]) -> float:
    """Cost of one realtime response from its ``response.done`` usage."""
    inp = usage.get("input_token_details") or {}
    out = usage.get("output_token_details") or {}
    cached = int(inp.get("cached_tokens") or 0)
    audio_in = int(inp.get("audio_tokens") or 0)
    text_in = int(inp.get("text_tokens") or max(0, int(usage.get("input_tokens") or 0) - audio_in))
    audio_out = int(out.get("audio_tokens") or 0)
    text_out = int(
        out.get("text_tokens") or max(0, int(usage.get("output_tokens") or 0) - audio_out)
    )
    cached_rate = rates.get("cached_in", rates.get("text_in", 0.0))
    total = (
        max(0, text_in - cached) * rates.get("text_in", 0.0)
        + min(cached, text_in) * cached_rate
        + audio_in * rates.get("audio_in", 0.0)
        + text_out * rates.get("text_out", 0.0)
        + audio_out * rates.get("audio_out", 0.0)
    )
    return round(total / 1_000_000, 10)
