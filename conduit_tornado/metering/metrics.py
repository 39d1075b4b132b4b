"""A Prometheus histogram small enough for the hot path (one bisect and two adds)."""

from __future__ import annotations

import bisect

from conduit_tornado.core.meters import OVERHEAD_BUCKETS


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
        OVERHEAD_BUCKETS,  # the same buckets as /metrics' conduit_gateway_overhead_seconds
    )
