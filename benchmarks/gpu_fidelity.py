"""The estimator's VRAM figures against a CUDA llama-server, per GPU and component.

    GGUF_HARNESS_LLAMA_CPP_SDIST=llama_cpp_python-0.3.36.tar.gz python benchmarks/gpu_fidelity.py

For a machine with an NVIDIA GPU and nvcc. It builds llama-server with CUDA from the commit the
harness pins (harness.toolchain, GGUF_HARNESS_LLAMA_BACKEND=cuda, the GPU's own architecture
only, so the compile takes minutes), then for each model and command line starts llama-server
with ``-ngl all`` (and ``-ts 1,1`` when two or more GPUs are visible), reads the CUDA buffers it
prints, and sets them beside the estimate for the same argv on the same GPUs. The last column
measures what no buffer line shows: the process's VRAM (nvidia-smi) minus its buffers, i.e. the
CUDA context and cuBLAS workspace that ``GPU_OVERHEAD`` (harness/estimate/_estimate.py, a 512 MiB
guess) stands for. Everything in one run, well under 10 minutes once built.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

os.environ.setdefault("GGUF_HARNESS_LLAMA_BACKEND", "cuda")

from harness.estimate import DeviceSpec, RunSettings, estimate, load_model, measure_server
from harness.estimate._estimate import GPU_OVERHEAD
from harness.toolchain import build_programs
from tests.big_shapes import BIG_SHAPES
from tests.estimate_models import SYNTHETIC

_MIB = 2**20
MODELS = ("llama-gqa", "moe", "gemma3-swa", "qwen3", "mamba")
BIG = ("llama-3.1-8b", "gemma-3-4b", "qwen2.5-7b")
ARGV = (["-c", "8192"], ["-c", "32768", "-fa", "off", "-np", "1"], ["-c", "4096", "-ctk", "q8_0"])


def gpus() -> list[tuple[str, int]]:
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [(n.strip(), int(m) * _MIB) for n, m in (line.split(",") for line in out.splitlines())]


def process_vram(pid: int) -> int:
    out = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    for line in out.splitlines():
        found, _, used = line.partition(",")
        if found.strip() == str(pid):
            return int(used) * _MIB
    return 0


def row(*cells: object) -> None:
    print(" | ".join(str(c) for c in cells))


def main() -> int:
    devices = gpus()
    if not devices:
        print("no NVIDIA GPU: GPU fidelity stays unmeasured", file=sys.stderr)
        return 2
    began = time.perf_counter()
    programs = build_programs(progress=lambda line: None)
    print(
        f"CUDA llama-server built in {programs.seconds:.0f} s ({len(devices)} GPU(s):"
        f" {', '.join(n for n, _ in devices)}); GPU_OVERHEAD now {GPU_OVERHEAD / _MIB:.0f} MiB"
    )
    splits = [["-ngl", "all"]] + ([["-ngl", "all", "-ts", "1,1"]] if len(devices) > 1 else [])
    row("model", "argv", "device", "component", "estimate MiB", "server MiB", "diff MiB")
    worst = 0.0
    overheads: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = {n: SYNTHETIC[n](Path(tmp, f"{n}.gguf")) for n in MODELS}
        paths |= {n: BIG_SHAPES[n](Path(tmp, f"{n}.gguf")) for n in BIG}
        for name, path in paths.items():
            for argv in ARGV:
                for split in splits:
                    full = [*argv, *split]
                    used = 2 if "-ts" in split else 1
                    specs = [DeviceSpec(f"CUDA{i}", devices[i][1]) for i in range(used)]
                    est = estimate(load_model(path), RunSettings.from_cmd(full), specs)
                    seen: list[int] = []
                    truth = measure_server(
                        path,
                        full,
                        binary=programs.path("llama-server"),
                        on_ready=lambda pid, seen=seen: seen.append(process_vram(pid)),  # type: ignore[misc]
                    )
                    buffers = sum(
                        v for part in (truth.weights, truth.kv_cache, truth.compute)
                        for k, v in part.items() if k.startswith("CUDA")
                    )  # fmt: skip
                    if used == 1 and seen and seen[0]:
                        overheads.append(seen[0] - buffers)
                    for i, device in enumerate(est.devices):
                        key = f"CUDA{i}"
                        for component, value, printed in (
                            ("weights", device.weights, truth.weights.get(key, 0)),
                            ("kv_cache", device.kv_cache, truth.kv_cache.get(key, 0)),
                            ("compute", device.compute, truth.compute.get(key, 0)),
                        ):
                            diff = (value - printed) / _MIB
                            worst = max(worst, abs(diff))
                            row(
                                name,
                                " ".join(full),
                                key,
                                component,
                                f"{value / _MIB:.2f}",
                                f"{printed / _MIB:.2f}",
                                f"{diff:+.2f}",
                            )
    print(f"\nworst component difference {worst:.2f} MiB; {time.perf_counter() - began:.0f} s")
    if overheads:
        overheads.sort()
        print(f"per-GPU overhead (process VRAM minus its buffers) over {len(overheads)} runs:"
              f" min {overheads[0] / _MIB:.0f}, median {overheads[len(overheads) // 2] / _MIB:.0f},"
              f" max {overheads[-1] / _MIB:.0f} MiB: put the max in GPU_OVERHEAD")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
