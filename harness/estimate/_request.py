"""What `gguf-harness estimate MODEL ARGS` asks: the machine it describes and the rows it shows.

The image's Cmd gives the defaults and the arguments given win, as they would appended to the Cmd
(the seed let its own flag defaults override the Cmd). The machine is explicit: the GPUs named
with their sizes, else as many GPUs as ``-ts`` has shares (sizes unknown), else none: CPU only,
as llama-server runs on a machine without GPUs; ``-dev none`` keeps everything on the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.units import format_size

from ._estimate import ModelSource, estimate
from ._placement import DeviceSpec
from ._records import Estimate
from ._settings import RunSettings

__all__ = ["EstimateRun", "estimate_run", "machine_of"]


@dataclass(frozen=True)
class EstimateRun:
    machine: tuple[DeviceSpec, ...]
    settings: RunSettings
    rows: tuple[Estimate, ...]  # one, or one per step of GPU layers

    @property
    def machine_text(self) -> str:
        if not self.machine:
            return "CPU only (give --gpu SIZE per GPU to estimate for GPUs)"
        count = len(self.machine)
        return f"{count} GPU{'s' if count > 1 else ''}: " + ", ".join(
            f"{d.name} {format_size(d.memory) if d.memory else 'size not given'}"
            for d in self.machine
        )

    @property
    def prompt_cache_max(self) -> int:
        """Bytes llama-server's prompt cache may grow to at run time (``--cache-ram``)."""
        return (self.settings.resolved().cache_ram_mib or 0) * 2**20


def machine_of(settings: RunSettings, gpu_sizes: Sequence[int]) -> tuple[DeviceSpec, ...]:
    if settings.devices == ("none",):
        return ()
    if gpu_sizes:
        return tuple(DeviceSpec(name=f"GPU{i}", memory=size) for i, size in enumerate(gpu_sizes))
    shares = settings.tensor_split or ()
    return tuple(DeviceSpec(name=f"GPU{i}") for i in range(len(shares)))


def estimate_run(
    model: ModelSource,
    cmd: Sequence[str],
    server_args: Sequence[str],
    gpu_sizes: Sequence[int] = (),
    *,
    gpu_layers_step: int | None = None,
    drafter: ModelSource | None = None,
    projector: ModelSource | None = None,
    adapters: Sequence[ModelSource] = (),
) -> EstimateRun:
    settings = RunSettings.from_cmd(cmd).override(RunSettings.from_cmd(server_args))
    machine = machine_of(settings, gpu_sizes)

    def run(layers: int | None) -> Estimate:
        chosen = settings if layers is None else settings.override(RunSettings(gpu_layers=layers))
        return estimate(
            model, chosen, machine, drafter=drafter, projector=projector, adapters=adapters
        )

    first = run(None)
    rows = [first]
    if gpu_layers_step:
        steps = sorted({*range(0, first.total_layers, gpu_layers_step), first.total_layers})
        rows = [run(n) for n in steps]
    return EstimateRun(machine, settings, tuple(rows))
