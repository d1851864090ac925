"""Errors and warnings about a Packerfile, each pinned to ``path:line:col``."""

from __future__ import annotations

from collections.abc import Iterable

from harness.errors import HarnessError, Location

__all__ = ["PackerfileError", "PackerfileErrors", "PackerfileWarning", "Sink", "raise_problems"]


class PackerfileError(HarnessError):
    """One problem in a Packerfile (or its ignore file).

    ``code`` is a short stable name for the kind of problem (``unknown-flag``, ``cmd-model``...),
    so that callers and tests need not match message text. Lines and columns count from 1;
    a column counts characters, a tab being one.
    """

    def __init__(self, message: str, location: Location | None = None, *, code: str) -> None:
        super().__init__(message, location)
        self.code = code

    @property
    def problems(self) -> tuple[PackerfileError, ...]:
        """Every problem this error stands for: itself alone, unless it is a PackerfileErrors."""
        return (self,)

    def sort_key(self) -> tuple[str, int, int]:
        loc = self.location
        if loc is None:
            return ("", 0, 0)
        return (loc.path or "", loc.line or 0, loc.col or 0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {str(self)!r})"


class PackerfileWarning(PackerfileError):
    """Something legal but probably unintended; collected on records, never raised."""


class PackerfileErrors(PackerfileError):
    """Several problems at once, ordered by position; the first one heads the message."""

    def __init__(self, problems: Iterable[PackerfileError]) -> None:
        ordered = tuple(sorted(problems, key=PackerfileError.sort_key))
        if not ordered:
            raise ValueError("PackerfileErrors needs at least one problem")
        first = ordered[0]
        more = len(ordered) - 1
        message = first.message
        if more:
            message += f" (and {more} more problem{'s' if more > 1 else ''})"
        super().__init__(message, first.location, code=first.code)
        self._problems = ordered

    @property
    def problems(self) -> tuple[PackerfileError, ...]:
        return self._problems


def raise_problems(problems: Iterable[PackerfileError]) -> None:
    """Raise nothing for no problems, the problem itself for one, PackerfileErrors for several."""
    found = [
        one
        for problem in problems
        for one in problem.problems
        if not isinstance(one, PackerfileWarning)
    ]
    if not found:
        return
    if len(found) == 1:
        raise found[0]
    raise PackerfileErrors(found)


class Sink:
    """Collects the problems of one file; nothing is raised until the whole file was read."""

    def __init__(self, path: str, escape: str = "\\") -> None:
        self.path = path
        self.escape = escape
        self.problems: list[PackerfileError] = []

    def at(self, line: int, col: int) -> Location:
        return Location(self.path, line, col)

    def error(self, message: str, where: Location, code: str) -> None:
        self.problems.append(PackerfileError(message, where, code=code))

    def warn(self, message: str, where: Location, code: str) -> None:
        self.problems.append(PackerfileWarning(message, where, code=code))
