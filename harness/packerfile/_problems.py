"""Collecting a Packerfile's problems: nothing is raised until the whole file was read."""

from __future__ import annotations

from collections.abc import Iterable

from harness.errors import Location, PackerfileError, PackerfileErrors, PackerfileWarning

__all__ = ["Sink", "one_line", "raise_problems"]


def one_line(message: str) -> str:
    """``message`` with its line breaks shown escaped: a problem prints as one line,
    ``file:line:col: message``, though it may quote a heredoc body or a JSON string."""
    return message.replace("\r", "\\r").replace("\n", "\\n")


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
        self.problems.append(PackerfileError(one_line(message), where, code=code))

    def warn(self, message: str, where: Location, code: str) -> None:
        self.problems.append(PackerfileWarning(one_line(message), where, code=code))
