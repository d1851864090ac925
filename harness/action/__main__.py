"""``python -m harness.action``: the CLI's ``action`` and ``matrix`` commands under the names
action.yml and older workflows call (``report [REPORT]``, ``matrix [PATH ...]``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from harness.cli import main as cli_main

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["report"]:
        words[0] = "action"
    return cli_main(words)


if __name__ == "__main__":
    sys.exit(main())
