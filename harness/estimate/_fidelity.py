"""Compare an estimate with what llama.cpp reported, component by component.

llama.cpp prints buffer sizes in MiB with two decimals (four for compute buffers), so a printed
figure stands for an interval; an estimate inside that interval has no error at all. The error
is measured from the interval, not from the printed midpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._measure import Measured
from ._records import Estimate

__all__ = ["COMPONENTS", "Comparison", "compare"]

COMPONENTS = ("weights", "kv_cache", "compute", "output", "total")
_MIB = 1024 * 1024
_HALF = {2: math.ceil(0.005 * _MIB), 4: math.ceil(0.00005 * _MIB)}


@dataclass(frozen=True)
class Comparison:
    component: str
    estimate: int
    truth: int  # as printed (rounded)
    slack: int  # half the printed resolution, times the number of figures summed

    @property
    def error(self) -> int:
        """Bytes the estimate lies outside the printed interval (negative: below it)."""
        if self.estimate > self.truth + self.slack:
            return self.estimate - (self.truth + self.slack)
        if self.estimate < self.truth - self.slack:
            return self.estimate - (self.truth - self.slack)
        return 0

    @property
    def error_pct(self) -> float:
        return 100.0 * self.error / self.truth if self.truth else 0.0

    @property
    def raw_pct(self) -> float:
        """Error against the printed figure itself, rounding included."""
        return 100.0 * (self.estimate - self.truth) / self.truth if self.truth else 0.0


def compare(est: Estimate, measured: Measured) -> tuple[Comparison, ...]:
    """The host components of a CPU-only estimate against llama.cpp's CPU buffers."""
    host = est.host
    pairs = {
        "weights": (host.weights, measured.weights, 2),
        "kv_cache": (host.kv_cache, measured.kv_cache, 2),
        "compute": (host.compute, measured.compute, 4 if measured.figures.get("compute") else 2),
        "output": (host.other, measured.output, 2),
    }
    rows = []
    total_est = total_truth = total_slack = 0
    for name, (value, printed, decimals) in pairs.items():
        truth = sum(printed.values())
        slack = _HALF[decimals] * max(1, measured.figures.get(name, len(printed)))
        rows.append(Comparison(name, value, truth, slack))
        total_est += value
        total_truth += truth
        total_slack += slack
    rows.append(Comparison("total", total_est, total_truth, total_slack))
    return tuple(rows)
