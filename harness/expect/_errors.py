"""Several problems in one model.yaml, reported together."""

from __future__ import annotations

from collections.abc import Sequence

from harness.errors import SpecError

__all__ = ["SpecErrors"]


class SpecErrors(SpecError):
    """All problems found in one file; ``str()`` gives one per line, the first as the head.

    Its ``location`` is the first problem's and its ``message`` starts with the first problem's,
    so code that handles a plain SpecError still points at a real line.
    """

    def __init__(self, problems: Sequence[SpecError]) -> None:
        if not problems:
            raise ValueError("SpecErrors needs at least one problem")
        self.problems: tuple[SpecError, ...] = tuple(problems)
        head = self.problems[0]
        rest = "".join(f"\n{problem}" for problem in self.problems[1:])
        super().__init__(head.message + rest, head.location)
