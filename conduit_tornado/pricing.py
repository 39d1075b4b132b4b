"""Cost of a request from its token usage: overrides first, then the bundled table.

A model with no price is reported as unpriced (cost None), never silently free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from .providers.base import Usage


@dataclass(frozen=True, slots=True)
class Price:
    input: float
    output: float
    cached_input: float | None = None

    def cost(self, usage: Usage) -> float:
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        cached_rate = self.input if self.cached_input is None else self.cached_input
        total = (
            (usage.prompt_tokens - cached) * self.input
            + cached * cached_rate
            + usage.completion_tokens * self.output
        )
        return round(total / 1_000_000, 10)


class PriceTable:
    def __init__(self, table: dict[str, Price]) -> None:
        self._table = table
        self._by_length = sorted(table, key=len, reverse=True)

    @classmethod
    def bundled(cls) -> PriceTable:
        raw = json.loads(
            resources.files("conduit_tornado").joinpath("data/prices.json").read_text()
        )
        return cls({k: Price(*v) for k, v in raw.items() if not k.startswith("_")})

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
                )
        return self.lookup(model)
