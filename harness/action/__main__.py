"""``python -m harness.action``: what action.yml runs (until ``gguf-harness`` has the commands).

- ``report [REPORT]``: ``run_action`` on the JSON report (default: ``$GGUF_HARNESS_REPORT``).
- ``matrix [PATH ...]``: print the ``strategy.matrix`` JSON for the models under the paths.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from harness.action._matrix import matrix
from harness.action._run import run_action
from harness.errors import HarnessError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.action")
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser("report", help="summary, annotations, outputs, GitHub")
    report.add_argument("report", nargs="?", default=os.environ.get("GGUF_HARNESS_REPORT"))
    grid = commands.add_parser("matrix", help="print the strategy.matrix JSON")
    grid.add_argument("paths", nargs="*", default=["."])
    args = parser.parse_args(argv)
    try:
        if args.command == "matrix":
            print(json.dumps(matrix(args.paths)))
            return 0
        if not args.report:
            parser.error("no report: give its path or set GGUF_HARNESS_REPORT")
        return run_action(args.report, os.environ)
    except HarnessError as error:
        print(f"gguf-harness: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
