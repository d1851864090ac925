"""What the lexer hands on: raw instructions with their flags, words and heredocs.

Kept apart from the lexer itself because _flags and _instructions read these records and
should not depend on how text is cut into them. Nothing here is checked or expanded yet.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import PackerfileError
from harness.packerfile._records import Directive

__all__ = ["LexResult", "RawFlag", "RawHeredoc", "RawInstruction", "Word"]


@dataclass(frozen=True)
class Word:
    """One argument: as written for shell forms (quotes kept), decoded for JSON forms."""

    text: str
    line: int
    col: int


@dataclass(frozen=True)
class RawFlag:
    """``--name[=value]`` before the arguments, quotes and escapes already removed."""

    name: str
    value: str | None
    line: int
    col: int


@dataclass(frozen=True)
class RawHeredoc:
    """A heredoc body as read from the lines after its instruction, ``<<-`` tabs not stripped.

    ``arg_index`` is the first argument word its opening covers and ``arg_count`` how many it
    covers: two for ``<< EOF`` or ``<<'one two'``, whose opening the shell reads as one word;
    none (index -1) when the opening starts inside a word. ``fd`` is the ``3`` of ``3<<EOF``.
    """

    name: str
    content: str
    expand: bool
    chomp: bool
    arg_index: int
    arg_count: int
    fd: int
    line: int
    col: int


@dataclass(frozen=True)
class RawInstruction:
    keyword: str
    line: int
    col: int
    end_line: int
    text: str
    flags: tuple[RawFlag, ...]
    args: tuple[Word, ...]
    args_text: str
    args_line: int
    args_col: int
    json: bool
    heredocs: tuple[RawHeredoc, ...]


@dataclass(frozen=True)
class LexResult:
    escape: str
    directives: tuple[Directive, ...]
    instructions: tuple[RawInstruction, ...]
    problems: tuple[PackerfileError, ...]
