"""A histogram of one gateway, for /admin/v1/metrics: the bucket counts of core/meters.py
(the same as /metrics' histograms take on the hot path), kept rather than drained, and
written out in Prometheus' text format.

Not a prometheus_client histogram: those belong to the process (several gateways in one
process would add up), and with PROMETHEUS_MULTIPROC_DIR set every one of them, in any
registry, writes a file that the /metrics scrape sums in.
"""

from __future__ import annotations

from conduit_tornado.core.meters import OVERHEAD_BUCKETS, Buckets


class Histogram(Buckets):
    __slots__ = ("help", "name")

    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...]) -> None:
        super().__init__(buckets)
        self.name = name
        self.help = help_text

    observe = Buckets.add

    @property
    def sum(self) -> float:
        return self.total

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        seen = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            seen += count
            label = "+Inf" if bound == float("inf") else repr(bound)
            lines.append(f'{self.name}_bucket{{le="{label}"}} {seen}')
        lines += [f"{self.name}_sum {self.total}", f"{self.name}_count {seen}"]
        return lines


def overhead_histogram() -> Histogram:
    return Histogram(
        "conduit_overhead_seconds",
        "Gateway time per request, without upstream calls and retry waits (x-conduit-overhead-ms).",
        OVERHEAD_BUCKETS,  # the same buckets as /metrics' conduit_gateway_overhead_seconds
    )
