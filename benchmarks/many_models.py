"""A maintainer's repository of 100 models x 3 quant types: `matrix` and pytest collection.

Generates the repository (each model: a model.yaml with budgets, smoke checks and three variants,
and a GGUFPackerfile that CONVERTs once and QUANTIZEs per variant, as models/minilm does) and
times, each as the median of 5 whole processes beside `python -c pass` in the same run (wall
clock, and CPU time: the steadier figure on a machine that other work keeps busy):

- `gguf-harness matrix REPO` (target under 1 s)
- `gguf-harness test REPO --collect-only -q` (target under 3 s)

    python benchmarks/many_models.py [--models 100] [--profile matrix|collect]

--profile writes a cProfile of one run to /tmp/many_models.<what>.prof and prints its top.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = ("q4_k_m", "q5_k_m", "q8_0")

PACKERFILE = """\
ARG        QUANTIZE_TYPE=Q4_K_M
FROM       scratch AS f16
COPY       weights model
CONVERT    --type=F16 model model.F16.gguf
FROM       scratch
QUANTIZE   --from=f16 --type=${QUANTIZE_TYPE} model.F16.gguf model.${QUANTIZE_TYPE}.gguf
CMD        ["-m", "model.${QUANTIZE_TYPE}.gguf", "-c", "4096"]
"""

MODEL_YAML = """\
schemaVersion: 1
name: model-{index:03d}
description: generated model {index} of a large repository
build:
  args: {{QUANTIZE_TYPE: Q4_K_M}}
  variants:
    - name: q4_k_m
    - name: q5_k_m
      args: {{QUANTIZE_TYPE: Q5_K_M}}
    - name: q8_0
      args: {{QUANTIZE_TYPE: Q8_0}}
expect:
  architecture: llama
  parameters: {{min: 100M, max: 200M}}
  bpw: {{min: 4, max: 9}}
  context_length: {{min: 2048}}
  chat_template: present
  labels:
    gguf.model.architecture: llama
memory:
  ctx_size: 4096
  budgets:
    - {{name: gpu-2gib, vram: 2GiB}}
    - {{name: cpu-only, ram: 1GiB, full_offload: false}}
smoke:
  checks:
    - name: capital
      kind: chat
      prompt: What is the capital of France?
      max_tokens: 16
      expect: {{regex: "(?i)paris"}}
"""


def generate(root: Path, models: int) -> None:
    (root / ".git").mkdir(parents=True)  # the repository root the plugin finds contexts under
    for index in range(models):
        directory = root / "models" / f"model-{index:03d}"
        (directory / "weights").mkdir(parents=True)
        (directory / "weights" / "config.json").write_text("{}\n")
        (directory / "GGUFPackerfile").write_text(PACKERFILE)
        (directory / "model.yaml").write_text(MODEL_YAML.format(index=index))


def timed(argv: list[str], cwd: Path, runs: int = 5) -> tuple[float, float, str]:
    """(median wall seconds, median CPU seconds of the process tree, its output)."""
    seconds, cpu = [], []
    out = ""
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
        seconds.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        if done.returncode != 0:
            sys.exit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        out = done.stdout
    return statistics.median(seconds), statistics.median(cpu), out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--profile", choices=("matrix", "collect"))
    args = parser.parse_args()
    py = sys.executable
    commands = {
        "matrix": [py, "-m", "harness", "matrix", "models"],
        "collect": [py, "-m", "harness", "test", "models", "--collect-only", "-q"],
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp, "repo")
        generate(root, args.models)
        os.environ["GGUF_HARNESS_CACHE"] = str(Path(tmp, "cache"))
        if args.profile:
            target = f"/tmp/many_models.{args.profile}.prof"
            argv = commands[args.profile]
            if args.profile == "collect":  # profile pytest itself, not the CLI's child process
                argv = [py, "-m", "pytest", *argv[5:]]
            subprocess.run([py, "-m", "cProfile", "-o", target, *argv[1:]], cwd=root, check=False)
            import pstats

            pstats.Stats(target).sort_stats("cumulative").print_stats(30)
            return
        base, base_cpu, _ = timed([py, "-c", "pass"], root)
        cells = args.models * len(VARIANTS)
        print(f"{args.models} models x {len(VARIANTS)} variants = {cells} cells")
        print(f"{'command':<44} {'wall':>8} {'x python':>9} {'cpu':>8} {'x python':>9}")
        print(f"{'python -c pass':<44} {base:>7.3f}s {1:>8.1f}x {base_cpu:>7.3f}s {1:>8.1f}x")
        for name, target in (("matrix", 1.0), ("collect", 3.0)):
            seconds, cpu, out = timed(commands[name], root)
            if name == "matrix":
                assert out.count('"only"') == cells, out[:500]
            else:
                assert f"{cells * 9} tests collected" in out or "collected" in out, out[-500:]
            verdict = "ok" if seconds < target else f"OVER {target:.0f} s"
            label = " ".join(commands[name][3:5])
            print(
                f"gguf-harness {label:<31} {seconds:>7.3f}s {seconds / base:>8.1f}x"
                f" {cpu:>7.3f}s {cpu / base_cpu:>8.1f}x  {verdict}"
            )
            if name == "collect":
                print(f"  {out.strip().splitlines()[-1]}")


if __name__ == "__main__":
    main()
