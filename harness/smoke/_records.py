"""The records smoke runs produce: answers, results, costs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.errors import Location
from harness.expect import CheckKind

__all__ = [
    "Answer",
    "Failure",
    "RunMeasurements",
    "SmokeResult",
    "Timings",
]


@dataclass(frozen=True)
class Timings:
    """llama.cpp's own account of one request (llama-server's ``timings`` object)."""

    prompt_n: int
    prompt_ms: float
    predicted_n: int
    predicted_ms: float

    @property
    def prompt_per_second(self) -> float | None:
        return self.prompt_n * 1000 / self.prompt_ms if self.prompt_ms > 0 else None

    @property
    def predicted_per_second(self) -> float | None:
        return self.predicted_n * 1000 / self.predicted_ms if self.predicted_ms > 0 else None


@dataclass(frozen=True)
class Answer:
    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    seconds: float  # the request, as the harness saw it
    timings: Timings | None
    raw: Mapping[str, Any] = field(repr=False, default_factory=dict)


@dataclass(frozen=True)
class Failure:
    """One expectation that did not hold. ``key`` is its path under the check in model.yaml
    (``expect.regex``, ``expect.similar[1].min``), so its line can be found."""

    key: str
    message: str

    @property
    def path(self) -> tuple[str | int, ...]:
        """``key`` as a data path: ``expect.similar[1].min`` -> ("expect", "similar", 1, "min"),
        to give to ``Section.location_of("checks", index, *path)``."""
        parts: list[str | int] = []
        for name in self.key.split("."):
            head, _, rest = name.partition("[")
            parts.append(head)
            parts += [int(index) for index in rest.rstrip("]").split("][") if index]
        return tuple(parts)


@dataclass(frozen=True)
class SmokeResult:
    name: str
    kind: CheckKind
    passed: bool
    message: str  # one line: what held, or the first thing that did not
    text: str | None  # the answer (chat, completion)
    measured: Mapping[str, Any]  # what was measured: tokens, dimension, norms, similarities
    failures: tuple[Failure, ...]
    seconds: float
    error: str | None = None  # the server's own error when the request itself failed
    log_tail: str = ""  # what the server logged during this check (shown for a failed item)
    answer: Answer | None = None
    location: Location | None = None  # the check in model.yaml


@dataclass(frozen=True)
class RunMeasurements:
    """What one model's server cost, to set next to the estimator's figure for its settings."""

    runner: str
    seconds_to_healthy: float | None  # first start: from spawn to the first healthy answer
    starts: int  # 1 unless a timed-out request forced restarts
    peak_rss_bytes: int  # the process tree's peak resident memory (mmap'ed weights included)
    peak_rss_anon_bytes: int  # its anonymous part: KV cache, compute buffers, heap
    peak_gpu_bytes: int | None  # None: no GPU could be read (no nvidia-smi)
    prompt_tokens_per_second: float | None
    generation_tokens_per_second: float | None
    requests_timed: int
    n_ctx: int | None  # the context llama.cpp created (from its log)
    buffers_mib: Mapping[str, float]  # llama.cpp's own buffer sizes: "CPU KV", "CPU compute"...
