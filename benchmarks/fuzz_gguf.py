"""Seeded mutation fuzzing of GGUF headers: every case parses or fails with one GGUFError.

    python benchmarks/fuzz_gguf.py [--cases 10000] [--seed 0] [--case N]

Each case is tests/test_gguf_fuzz.py's ``mutate`` driven by ``random.Random(f"{seed}:{n}")``, so
any case replays alone with ``--case N``. A case reads the header (keeping array bodies or not),
then, if it parses, derives the facts and writes the seed's image config entry: everything that
reads a GGUF header for a report, a label or a check. A crash is any exception but GGUFError.
Time is measured untraced; then every case runs again under tracemalloc for its peak memory.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
import traceback
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from harness.errors import GGUFError
from harness.gguf import derive_facts, read_header
from harness.oci import gguf_entry
from tests.test_gguf_fuzz import check_consistent, mutate


def run_case(data: bytes, arrays: bool) -> str:
    """``parsed``, ``refused`` or ``no model`` (parsed, but not a model llama.cpp could load)."""
    try:
        header = read_header(data, arrays=arrays)
    except GGUFError as error:
        location = error.location
        if location is None or location.offset is None or not 0 <= location.offset <= len(data):
            raise AssertionError(f"GGUFError without a byte offset in the file: {error}") from None
        return "refused"
    check_consistent(header, len(data))
    json.dumps(gguf_entry(header, "/m.gguf", 1), allow_nan=False)
    try:
        facts = derive_facts([header], ["<mutated>"])
    except GGUFError:
        return "no model"
    json.dumps(facts.to_json(), allow_nan=False)
    return "parsed"


def case_input(seed: int, number: int) -> tuple[bytes, bool]:
    rng = random.Random(f"{seed}:{number}")
    return mutate(rng), rng.choice((False, True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--case", type=int, help="replay one case, with its traceback")
    args = parser.parse_args()
    if args.case is not None:
        data, arrays = case_input(args.seed, args.case)
        print(f"case {args.case}: {len(data)} bytes, arrays={arrays}: {run_case(data, arrays)}")
        return 0

    outcomes: dict[str, int] = {}
    crashes: list[tuple[int, str]] = []
    times: list[float] = []
    worst_time, worst_time_case = 0.0, -1
    worst_peak, worst_peak_case = 0, -1
    started = time.perf_counter()
    for number in range(args.cases):
        data, arrays = case_input(args.seed, number)
        begun = time.perf_counter()
        try:
            outcome = run_case(data, arrays)
        except Exception as exc:  # the point: anything but GGUFError is a crash
            crashes.append((number, "".join(traceback.format_exception_only(exc)).strip()))
            continue
        took = time.perf_counter() - begun
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        times.append(took)
        if took > worst_time:
            worst_time, worst_time_case = took, number
    elapsed = time.perf_counter() - started
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    crashed = {number for number, _ in crashes}
    tracemalloc.start()
    for number in range(args.cases):
        if number not in crashed:
            data, arrays = case_input(args.seed, number)
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            run_case(data, arrays)
            peak = tracemalloc.get_traced_memory()[1] - before
            if peak > worst_peak:
                worst_peak, worst_peak_case = peak, number
    tracemalloc.stop()
    counts = ", ".join(f"{name} {count}" for name, count in sorted(outcomes.items()))
    print(f"cases    {args.cases} (seed {args.seed}) in {elapsed:.1f} s: {counts}")
    print(f"crashes  {len(crashes)}")
    for number, what in crashes[:20]:
        print(f"  case {number}: {what}  (replay: --seed {args.seed} --case {number})")
    times.sort()
    middle, p99 = times[len(times) // 2], times[len(times) * 99 // 100]
    print(f"worst    {worst_time * 1e3:.2f} ms (case {worst_time_case}); "
          f"median {middle * 1e3:.3f} ms, p99 {p99 * 1e3:.3f} ms")  # fmt: skip
    print(f"peak     {worst_peak / 1024:.1f} KiB allocated by one case (case {worst_peak_case});"
          f" process max RSS {rss:.0f} MiB before tracing")  # fmt: skip
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
