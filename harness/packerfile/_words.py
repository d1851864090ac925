"""Cutting a logical line into arguments, each keeping the line:col where it was written.

Three argument grammars, as BuildKit's dispatch table uses them: blank-separated words (FROM,
the list forms' shell fallback), shell words that respect quotes (ARG, LABEL), and one JSON
array of strings (the exec/list forms). Also the leading ``--flag`` words and the squeezed
text that history entries show. Apart from the lexer because none of it cares about lines,
comments, directives or heredocs: it only sees one already-glued logical line.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from harness.packerfile._raw import RawFlag, Word

__all__ = [
    "Logical",
    "blank_split",
    "json_array",
    "leading_flags",
    "shell_words",
    "skip",
    "squeeze",
]

# BuildKit splits FROM and list-form arguments on these only (no newline can occur here).
_BLANKS = frozenset("\t\v\f\r ")
_JSON_BLANKS = frozenset(" \t\n\r")
_DECODER = json.JSONDecoder()


class Logical:
    """A logical line glued from pieces of physical lines, remembering where each char was."""

    def __init__(self) -> None:
        self._chars: list[str] = []
        self._where: list[tuple[int, int]] = []
        self._index: dict[tuple[int, int], int] = {}

    def add(self, piece: str, line: int, first_col: int) -> None:
        for k, ch in enumerate(piece):
            self._index[line, first_col + k] = len(self._chars)
            self._chars.append(ch)
            self._where.append((line, first_col + k))

    @property
    def text(self) -> str:
        return "".join(self._chars)

    def at(self, index: int) -> tuple[int, int]:
        if index < len(self._where):
            return self._where[index]
        if self._where:
            line, col = self._where[-1]
            return line, col + 1
        return 1, 1

    def index(self, word: Word) -> int:
        """Where in the text ``word`` (cut from this line) starts."""
        return self._index[word.line, word.col]


def skip(text: str, i: int, pred: Callable[[str], bool]) -> int:
    while i < len(text) and pred(text[i]):
        i += 1
    return i


def leading_flags(logical: Logical, start: int, escape: str) -> tuple[list[RawFlag], int]:
    """Leading ``--flag`` words, as BuildKit's extractBuilderFlags reads them, and where the
    arguments after them start."""
    text = logical.text
    flags: list[RawFlag] = []
    i = start
    while True:
        i = skip(text, i, str.isspace)
        if not text.startswith("--", i):
            return flags, i
        word_start = i
        buf: list[str] = []
        while i < len(text) and not text[i].isspace():
            ch = text[i]
            if ch in "'\"":
                i += 1
                while i < len(text) and text[i] != ch:
                    if text[i] == escape:
                        i += 1
                        if i >= len(text):
                            break
                    buf.append(text[i])
                    i += 1
                i += 1
                continue
            if ch == escape:
                if i + 1 < len(text):
                    buf.append(text[i + 1])
                i += 2
                continue
            buf.append(ch)
            i += 1
        word = "".join(buf)
        if word == "--":
            return flags, skip(text, i, str.isspace)
        name, sep, value = word[2:].partition("=")
        line, col = logical.at(word_start)
        flags.append(RawFlag(name, value if sep else None, line, col))


def blank_split(logical: Logical, start: int, stop: int) -> list[Word]:
    text = logical.text
    words: list[Word] = []
    i = start
    while i < stop:
        while i < stop and text[i] in _BLANKS:
            i += 1
        if i >= stop:
            break
        j = i
        while j < stop and text[j] not in _BLANKS:
            j += 1
        words.append(Word(text[i:j], *logical.at(i)))
        i = j
    return words


def shell_words(logical: Logical, start: int, stop: int, escape: str) -> list[Word]:
    """Split on blanks outside quotes, keeping quotes and escapes for the expander (parseWords)."""
    text = logical.text
    words: list[Word] = []
    i = start
    while i < stop:
        while i < stop and text[i].isspace():
            i += 1
        if i >= stop:
            break
        word_start = i
        buf: list[str] = []
        quote = ""
        while i < stop:
            ch = text[i]
            if not quote and ch.isspace():
                break
            if quote and ch == quote:
                quote = ""
            elif not quote and ch in "'\"":
                quote = ch
            elif ch == escape and quote != "'":
                if i + 1 >= stop:
                    i += 1
                    continue
                buf.append(ch)
                i += 1
                ch = text[i]
            buf.append(ch)
            i += 1
        words.append(Word("".join(buf), *logical.at(word_start)))
    return words


def json_array(text: str) -> list[tuple[object, int]] | None:
    """Decode ``text`` as exactly one JSON array: (element, offset of element) or None."""
    i = 1
    items: list[tuple[object, int]] = []

    def blank(j: int) -> int:
        while j < len(text) and text[j] in _JSON_BLANKS:
            j += 1
        return j

    i = blank(i)
    if text.startswith("]", i):
        return items if not text[i + 1 :].strip(" \t\n\r") else None
    while True:
        try:
            value, end = _DECODER.raw_decode(text, i)
        except (ValueError, RecursionError):  # [[[[... nests past Python's stack: not JSON
            return None
        items.append((value, i))
        i = blank(end)
        if text.startswith(",", i):
            i = blank(i + 1)
            continue
        if text.startswith("]", i):
            break
        return None
    return items if not text[i + 1 :].strip(" \t\n\r") else None


def squeeze(text: str, escape: str) -> str:
    """``text`` with each run of blanks outside quotes turned into one space (for history)."""
    out: list[str] = []
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == escape and quote != "'" and i + 1 < len(text):
            out.append(text[i : i + 2])
            i += 2
            continue
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch.isspace():
            if out and out[-1] != " ":
                out.append(" ")
            i += 1
            continue
        out.append(ch)
        i += 1
    return "".join(out).strip()
