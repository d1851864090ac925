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
    "printable",
]

# C0 and C1 controls, DEL, and the bidirectional overrides that reorder what a terminal shows
_UNSAFE = frozenset(
    [*range(0x00, 0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
)


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` safe for a terminal or a CI log: every control character escaped (``\\x1b``), so
    text from a registry, a label or a model's metadata cannot clear the screen, move the cursor
    or fake a line of our own output. Tabs stay; newlines stay only when asked."""
    kept = {0x09, 0x0A} if keep_newlines else {0x09}
    if not any(ord(c) in _UNSAFE and ord(c) not in kept for c in text):
        return text
    return "".join(
        c
        if ord(c) not in _UNSAFE or ord(c) in kept
        else f"\\x{ord(c):02x}"
        if ord(c) < 0x100
        else f"\\u{ord(c):04x}"
        for c in text
    )


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
        # Messages quote what others wrote (registry errors, file names, metadata): escaped.
        if self.location is None:
            return printable(self.message, keep_newlines=True)
        return printable(f"{self.location}: {self.message}", keep_newlines=True)


class UsageError(HarnessError):
    """A command line that cannot be acted on (missing file, bad flag value)."""


class GGUFError(HarnessError):
    """A file that is not a well-formed GGUF; the location carries the byte offset."""


class SpecError(HarnessError):
    """A model.yaml that is not valid YAML or does not match the schema; carries file:line:col."""


class ArtifactError(HarnessError):
    """The artifact a model's checks run on (its GGUF file or image) could not be produced."""
