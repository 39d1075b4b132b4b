"""A Prometheus histogram small enough for the hot path (one bisect and two adds)."""

from __future__ import annotations

import bisect


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...]) -> None:
        self.name = name
        self.help = help_text
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        seen = 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts, strict=True):
            seen += count
            label = "+Inf" if bound == float("inf") else repr(bound)
            lines.append(f'{self.name}_bucket{{le="{label}"}} {seen}')
        lines += [f"{self.name}_sum {self.sum}", f"{self.name}_count {self.count}"]
        return lines


def overhead_histogram() -> Histogram:
    return Histogram(
        "conduit_overhead_seconds",
        "Gateway time per request, without upstream calls and retry waits (x-conduit-overhead-ms).",
        (
            0.0001,
            0.00025,
            0.0005,
            0.00075,
            0.001,
            0.0015,
            0.002,
            0.003,
            0.005,
            0.0075,
            0.01,
            0.025,
            0.05,
            0.1,
        ),
    )
