"""The files a GitHub Actions step writes to talk to the runner: outputs and the job summary."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping

__all__ = ["append_summary", "format_outputs", "write_outputs"]


def format_outputs(values: Mapping[str, str]) -> str:
    """``$GITHUB_OUTPUT`` text: every value in the multi-line form ``NAME<<DELIM``.

    The delimiter is random and checked against the value, so no value (a JSON document, a
    path with a newline) can end its own block early and inject another output.
    """
    blocks = []
    for name, value in values.items():
        if not name or any(c in name for c in "\n\r=<"):
            raise ValueError(f"not an output name: {name!r}")
        delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
        while delimiter in value:
            delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
        blocks.append(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")
    return "".join(blocks)


def write_outputs(path: str | os.PathLike[str], values: Mapping[str, str]) -> None:
    """Append ``values`` to the ``$GITHUB_OUTPUT`` file at ``path``."""
    with open(path, "a", encoding="utf-8") as file:
        file.write(format_outputs(values))


def append_summary(path: str | os.PathLike[str], markdown: str) -> None:
    """Append Markdown to the ``$GITHUB_STEP_SUMMARY`` file at ``path``."""
    with open(path, "a", encoding="utf-8") as file:
        file.write(markdown if markdown.endswith("\n") else markdown + "\n")
