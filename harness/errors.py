"""One exception tree for everything the harness reports to a user.

Every error knows where the problem is: a file and line (YAML, Packerfile) or a file and byte
offset (GGUF, tar). ``str(error)`` is the one line the CLI prints and pytest shows.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ArtifactError",
    "GGUFError",
    "HarnessError",
    "Location",
    "SpecError",
    "UsageError",
]


class Location:
    """Where a problem sits: ``path:line:col`` for text, ``path@offset`` for binary files."""

    __slots__ = ("col", "line", "offset", "path")

    def __init__(
        self,
        path: str | Path | None = None,
        line: int | None = None,
        col: int | None = None,
        offset: int | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.col = col
        self.offset = offset

    def __str__(self) -> str:
        text = self.path or "<input>"
        if self.line is not None:
            text += f":{self.line}"
            if self.col is not None:
                text += f":{self.col}"
        if self.offset is not None:
            text += f": at byte {self.offset}"
        return text

    def __repr__(self) -> str:
        return f"Location({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Location):
            return NotImplemented
        return (self.path, self.line, self.col, self.offset) == (
            other.path,
            other.line,
            other.col,
            other.offset,
        )

    def __hash__(self) -> int:
        return hash((self.path, self.line, self.col, self.offset))


class HarnessError(Exception):
    """Base of every error the harness raises on bad input or a failed stage."""

    def __init__(self, message: str, location: Location | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.location = location

    def __str__(self) -> str:
        if self.location is None:
            return self.message
        return f"{self.location}: {self.message}"


class UsageError(HarnessError):
    """A command line that cannot be acted on (missing file, bad flag value)."""


class GGUFError(HarnessError):
    """A file that is not a well-formed GGUF; the location carries the byte offset."""


class SpecError(HarnessError):
    """A model.yaml that is not valid YAML or does not match the schema; carries file:line:col."""


class ArtifactError(HarnessError):
    """The artifact a model's checks run on (its GGUF file or image) could not be produced."""
