"""Seeded mutation fuzzing of the Packerfile parsers: every case parses or is refused with one
PackerfileError on one line naming the file and a line.

    python benchmarks/fuzz_packerfile.py [--cases 10000] [--seed 0] [--parser NAME] [--case N]

Parsers: ``packerfile`` (lexer, records and plan), ``expand`` (nested substitutions, alone and
in every place a Packerfile expands) and ``ignore`` (.ggufpackerignore / .dockerignore). Each
case is tests/test_packerfile_fuzz.py's generator driven by ``random.Random``, so any case
replays alone with ``--parser NAME --case N``. A crash is any exception but PackerfileError
(ExpandError for the expander called alone), or a refusal that is not one located line.
Time is measured untraced; then every case runs again under tracemalloc for its peak memory.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import traceback
import tracemalloc
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from tests.test_packerfile_fuzz import PARSERS, Parser, case_for


def fuzz(parser: Parser, cases: int, seed: int, folder: Path) -> bool:
    """Run and report ``cases`` cases of one parser; True when none crashed."""
    outcomes: dict[str, int] = {}
    crashes: list[tuple[int, str]] = []
    times: list[float] = []
    worst_time, worst_time_case = 0.0, -1
    worst_peak, worst_peak_case = 0, -1
    started = time.perf_counter()
    for number in range(cases):
        case = case_for(parser, seed, number)
        begun = time.perf_counter()
        try:
            outcome = parser.run(case, folder)
        except Exception as exc:  # the point: anything but the parser's own error is a crash
            crashes.append((number, "".join(traceback.format_exception_only(exc)).strip()))
            continue
        took = time.perf_counter() - begun
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        times.append(took)
        if took > worst_time:
            worst_time, worst_time_case = took, number
    elapsed = time.perf_counter() - started

    crashed = {number for number, _ in crashes}
    tracemalloc.start()
    for number in range(cases):
        if number not in crashed:
            case = case_for(parser, seed, number)
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            parser.run(case, folder)
            peak = tracemalloc.get_traced_memory()[1] - before
            if peak > worst_peak:
                worst_peak, worst_peak_case = peak, number
    tracemalloc.stop()

    counts = ", ".join(f"{name} {count}" for name, count in sorted(outcomes.items()))
    print(f"{parser.name}")
    print(f"  cases    {cases} (seed {seed}) in {elapsed:.1f} s: {counts}")
    kinds: dict[str, int] = {}
    for _, what in crashes:
        kind = what.splitlines()[-1].split(":", 1)[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    shown = ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()))
    print(f"  crashes  {len(crashes)}" + (f": {shown}" if shown else ""))
    for number, what in crashes[:20]:
        first = what.splitlines()[-1][:160]
        print(f"    case {number}: {first}  (replay: --parser {parser.name} --case {number})")
    if times:
        times.sort()
        middle, p99 = times[len(times) // 2], times[len(times) * 99 // 100]
        print(f"  worst    {worst_time * 1e3:.2f} ms (case {worst_time_case}); "
              f"median {middle * 1e3:.3f} ms, p99 {p99 * 1e3:.3f} ms")  # fmt: skip
    print(f"  peak     {worst_peak / 1024:.1f} KiB allocated by one case (case {worst_peak_case})")
    return not crashes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000, help="cases per parser")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parser", choices=sorted(PARSERS), help="only this parser")
    parser.add_argument("--case", type=int, help="replay one case of --parser, with traceback")
    args = parser.parse_args()
    warnings.simplefilter("error")  # a warning (re's FutureWarning on "[&&]") is a crash too
    chosen = [PARSERS[args.parser]] if args.parser else [PARSERS[n] for n in sorted(PARSERS)]
    with tempfile.TemporaryDirectory() as folder:
        if args.case is not None:
            if not args.parser:
                parser.error("--case needs --parser")
            case = case_for(chosen[0], args.seed, args.case)
            print(f"case {args.case}: name {case.name!r}")
            print(repr(case.data if case.data is not None else case.text))
            print(chosen[0].run(case, Path(folder)))
            return 0
        clean = [fuzz(one, args.cases, args.seed, Path(folder)) for one in chosen]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"process max RSS {rss:.0f} MiB")
    return 0 if all(clean) else 1


if __name__ == "__main__":
    sys.exit(main())
