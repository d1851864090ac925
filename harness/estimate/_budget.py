"""Memory budgets (model.yaml ``memory.budgets``): does the run fit a machine, by how much, and
what is the largest context that still fits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import UsageError
from harness.units import format_size, parse_percent, parse_size

from ._estimate import ModelSource, _info, estimate
from ._model import ModelInfo
from ._placement import DeviceSpec
from ._records import Estimate
from ._settings import RunSettings

__all__ = [
    "Budget",
    "BudgetCheck",
    "BudgetResult",
    "check_budget",
    "evaluate_budget",
    "max_context",
]

_CTX_STEP = 256  # llama.cpp pads the context to this, so nothing in between differs


@dataclass(frozen=True)
class Budget:
    """A machine the model must fit: ``count`` GPUs of ``vram`` bytes each and/or ``ram``."""

    name: str
    vram: int | None = None  # one GPU
    count: int = 1
    tensor_split: tuple[float, ...] | None = None
    full_offload: bool = True
    headroom: int = 0  # bytes to keep free per GPU
    headroom_fraction: float | None = None  # or this share of each GPU's vram (0.1: 10 %)
    ctx_size: int | None = None
    ram: int | None = None
    description: str | None = None

    @classmethod
    def from_yaml(cls, mapping: Mapping[str, Any], ram: Any = None) -> Budget:
        """One entry of ``memory.budgets``; ``ram`` is ``memory.ram``, the default host budget."""
        headroom = mapping.get("headroom")
        fraction = None
        bytes_ = 0
        if isinstance(headroom, str) and headroom.strip().endswith("%"):
            fraction = parse_percent(headroom)
        elif headroom is not None:
            bytes_ = parse_size(headroom)
        split = mapping.get("tensor_split")
        ram_value = mapping.get("ram", ram)
        vram = mapping.get("vram")
        return cls(
            name=str(mapping["name"]),
            vram=None if vram is None else parse_size(vram),
            count=int(mapping.get("count", 1)),
            tensor_split=None if split is None else tuple(float(x) for x in split),
            full_offload=bool(mapping.get("full_offload", True)),
            headroom=bytes_,
            headroom_fraction=fraction,
            ctx_size=mapping.get("ctx_size"),
            ram=None if ram_value is None else parse_size(ram_value),
            description=mapping.get("description"),
        )

    def devices(self) -> tuple[DeviceSpec, ...]:
        if not self.vram:
            return ()
        return tuple(DeviceSpec(f"GPU{i}", self.vram) for i in range(self.count))

    def settings(self, base: RunSettings | None) -> RunSettings:
        """``base`` with this budget's tensor split and context (when it sets them)."""
        return (base or RunSettings()).override(
            RunSettings(ctx_size=self.ctx_size, tensor_split=self.tensor_split)
        )

    def usable(self) -> int | None:
        """Bytes of one GPU the estimate may use: vram less the headroom."""
        if not self.vram:
            return None
        keep = self.headroom
        if self.headroom_fraction is not None:
            keep = max(keep, int(self.vram * self.headroom_fraction))
        return self.vram - keep


@dataclass(frozen=True)
class BudgetCheck:
    """One limit of a budget: what is used against what is allowed."""

    what: str  # "GPU0", "RAM" or "full offload"
    used: int  # bytes; for "full offload", the layers left on the host
    limit: int

    @property
    def margin(self) -> int:
        return self.limit - self.used

    @property
    def ok(self) -> bool:
        return self.used <= self.limit


@dataclass(frozen=True)
class BudgetResult:
    """Whether an estimate fits a budget, every limit with its margin, and the largest context."""

    budget: Budget
    estimate: Estimate
    checks: tuple[BudgetCheck, ...]
    max_context: int | None = None  # set by evaluate_budget

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def margin(self) -> int:
        """The tightest margin in bytes (negative: over budget by that much)."""
        sizes = [c.margin for c in self.checks if c.what != "full offload"]
        return min(sizes, default=0)

    def summary(self) -> str:
        parts = []
        for c in self.checks:
            if c.what == "full offload":
                parts.append("full offload" if c.ok else f"{c.used} layer(s) left on the host")
            else:
                parts.append(f"{c.what} {_mib(c.used)} of {_mib(c.limit)} ({_mib(c.margin)} free)")
        verdict = "fits" if self.passed else "does not fit"
        return f"{self.budget.name}: {verdict}: " + "; ".join(parts)

    def detail(self) -> tuple[str, ...]:
        """One line per GPU and the host, then the largest context that fits."""
        lines = [
            f"{c.what}: {format_size(c.used)} of {format_size(c.limit)} "
            f"({'ok' if c.ok else 'over'} by {format_size(abs(c.margin))})"
            for c in self.checks
            if c.what != "full offload"
        ]
        return (*lines, f"largest context that fits: {self.max_context}")

    def to_json(self) -> dict[str, Any]:
        return {
            "budget": self.budget.name,
            "passed": self.passed,
            "margin": self.margin,
            "max_context": self.max_context,
            "checks": [
                {"what": c.what, "used": c.used, "limit": c.limit, "margin": c.margin, "ok": c.ok}
                for c in self.checks
            ],
            "estimate": self.estimate.to_json(),
        }


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:.2f} MiB"


def check_budget(est: Estimate, budget: Budget) -> BudgetResult:
    """Check an estimate made for ``budget.devices()`` against the budget's limits."""
    checks: list[BudgetCheck] = []
    usable = budget.usable()
    if usable is not None:
        if len(est.devices) != budget.count:
            raise UsageError(
                f"budget {budget.name!r} has {budget.count} GPU(s) but the estimate was made "
                f"for {len(est.devices)}: estimate with budget.devices()"
            )
        for device in est.devices:
            checks.append(BudgetCheck(device.name, device.total, usable))
        if budget.full_offload:
            left = est.total_layers - est.offload_layers
            checks.append(BudgetCheck("full offload", left, 0))
    if budget.ram is not None:
        checks.append(BudgetCheck("RAM", est.ram, budget.ram))
    return BudgetResult(budget, est, tuple(checks))


def evaluate_budget(
    model: ModelSource,
    settings: RunSettings | None,
    budget: Budget,
    *,
    drafter: ModelSource | None = None,
    projector: ModelSource | None = None,
    adapters: Sequence[ModelSource] = (),
    find_max_context: bool = True,
) -> BudgetResult:
    """Estimate for the budget's machine, check it, and find the largest context that fits.

    A budget that accepts partial offload, with no GPU layer count set, gets as many layers
    on its GPUs as fit (what llama-server's --fit does), the output layer first.
    """
    info = _info(model)
    extra = {"drafter": drafter, "projector": projector, "adapters": adapters}
    run = budget.settings(settings)
    if budget.vram and not budget.full_offload and run.gpu_layers is None:
        run = run.override(RunSettings(gpu_layers=_fit_layers(info, run, budget, extra)))
    result = check_budget(estimate(info, run, budget.devices(), **extra), budget)  # type: ignore[arg-type]
    if not find_max_context:
        return result
    best = max_context(info, run, budget, **extra)  # type: ignore[arg-type]
    return dataclasses.replace(result, max_context=best)


def _fit_layers(info: ModelInfo, run: RunSettings, budget: Budget, extra: dict[str, Any]) -> int:
    usable = budget.usable() or 0

    def fits(layers: int) -> bool:
        est = estimate(
            info, run.override(RunSettings(gpu_layers=layers)), budget.devices(), **extra
        )
        return all(d.total <= usable for d in est.devices)

    # more layers never need less memory on the GPUs, so the largest count that fits is searched
    low, high = 0, info.n_layer + 1
    if fits(high):
        return high
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low


def max_context(
    model: ModelSource,
    settings: RunSettings | None,
    budget: Budget,
    *,
    drafter: ModelSource | None = None,
    projector: ModelSource | None = None,
    adapters: Sequence[ModelSource] = (),
    limit: int | None = None,
) -> int:
    """The largest context size (a multiple of 256, at most ``limit``, by default the model's
    training context) whose estimate fits ``budget``; 0 when even 256 does not fit."""
    info = _info(model)
    top = (limit or info.n_ctx_train or 4096) // _CTX_STEP
    base = settings or RunSettings()
    devices = budget.devices()

    def fits(steps: int) -> bool:
        run = base.override(RunSettings(ctx_size=steps * _CTX_STEP))
        est = estimate(info, run, devices, drafter=drafter, projector=projector, adapters=adapters)
        return check_budget(est, budget).passed

    if top < 1 or not fits(1):
        return 0
    low, high = 1, top
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low * _CTX_STEP
