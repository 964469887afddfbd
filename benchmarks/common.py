"""Shared shape of benchmark results: every figure is a ratio to a same-run baseline."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class BenchResult:
    """One measured figure and the baseline measured beside it in the same run."""

    name: str
    ops_per_sec: float
    baseline_name: str
    baseline_ops_per_sec: float

    @property
    def ratio(self) -> float:
        """Our throughput as a fraction of the baseline's (1.0 = as fast as the baseline)."""
        return self.ops_per_sec / self.baseline_ops_per_sec if self.baseline_ops_per_sec else 0.0

    def line(self) -> str:
        """One printable row."""
        return (
            f"{self.name:<44} {self.ops_per_sec:>12,.0f}/s   vs {self.baseline_name:<34} "
            f"{self.baseline_ops_per_sec:>12,.0f}/s   ratio {self.ratio:5.2f}"
        )


def ops_per_sec(operation: Callable[[], object], count: int) -> float:
    """Run `operation` `count` times and return calls per second (best of three runs)."""
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(count):
            operation()
        elapsed = time.perf_counter() - start
        best = max(best, count / elapsed if elapsed > 0 else 0.0)
    return best
