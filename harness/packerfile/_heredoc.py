"""Heredocs: which words of a line open one, and reading their bodies from the lines below.

Apart from the lexer because a heredoc is the one construct that reads physical lines past
its own logical line: the lexer hands over the line and its arguments, this module hands back
the bodies and where the next instruction starts.

BuildKit finds heredocs by running its shell lexer over the whole logical line (quotes and
backslashes kept, ``<<`` glued to the blanks after it, so ``<< EOF`` is one word), then reads
each word that matches ``^(\\d*)<<(-?)\\s*(...)$`` as an opening whose delimiter is shell-unquoted.
We follow that, because a line BuildKit reads without heredocs has its "body" read as
instructions, and the file must mean the same to both. The escape char here is always the
backslash, whatever the escape directive says, as in BuildKit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from harness.packerfile._raw import RawHeredoc
from harness.packerfile._words import Logical

__all__ = ["Opening", "OpeningWord", "find_openings", "parse_opening", "read_heredocs"]

# ASCII digits and Go's \s: Python's \d and \s would take Unicode digits and blanks too.
_OPENING_RE = re.compile(r"([0-9]*)<<(-?)[\t\n\f\r ]*([^<]*)\Z")
# File descriptors are uint in Go; an overflowing one is Go's max value.
_MAX_FD = 2**64 - 1
# Go's unicode.IsSpace, which BuildKit splits words on: Python's isspace also takes \x1c-\x1f.
_NOT_GO_SPACE = frozenset("\x1c\x1d\x1e\x1f")

#: Reports a problem as (message, line, col, code); the lexer collects them.
Report = Callable[[str, int, int, str], None]


@dataclass(frozen=True)
class Opening:
    """What a heredoc-opening word says: the delimiter and how to read and use the body."""

    name: str
    expand: bool
    chomp: bool
    fd: int


@dataclass(frozen=True)
class OpeningWord:
    """An opening as written on the line: the word and its offsets in the logical line."""

    opening: Opening
    word: str
    start: int
    end: int


def _space(ch: str) -> bool:
    return ch.isspace() and ch not in _NOT_GO_SPACE


def _delimiter(text: str) -> tuple[str, bool] | None:
    """The delimiter with quotes and escapes removed, and whether any part was quoted; None
    unless ``text`` is exactly one shell word. ValueError on an unclosed quote."""
    words: list[str] = []
    buf: list[str] = []
    in_word = quoted = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise ValueError("unclosed single quote")
            buf.append(text[i + 1 : end])
            in_word = quoted = True
            i = end + 1
            continue
        if ch == '"':
            i += 1
            while i < len(text) and text[i] != '"':
                # In double quotes a backslash escapes only ", $ and itself.
                if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in '"$\\':
                    i += 1
                buf.append(text[i])
                i += 1
            if i >= len(text):
                raise ValueError("unclosed double quote")
            in_word = quoted = True
            i += 1
            continue
        if ch == "\\":
            if i + 1 < len(text):  # a backslash at the very end escapes nothing: dropped
                buf.append(text[i + 1])
                in_word = True
            i += 2
            continue
        if _space(ch):
            if in_word and buf:
                words.append("".join(buf))
                buf.clear()
                in_word = False
        else:
            buf.append(ch)
            in_word = True
        i += 1
    if buf:
        words.append("".join(buf))
    if len(words) != 1:
        return None
    return words[0], quoted


def parse_opening(word: str) -> Opening | None:
    """The heredoc ``word`` opens (``<<EOF``, ``<<-'EOF'``, ``3<< EOF``), or None when it opens
    none. ValueError for an unclosed quote in the delimiter, as BuildKit's ParseHeredoc."""
    match = _OPENING_RE.match(word)
    if match is None or not match.group(3):
        return None
    found = _delimiter(match.group(3))
    if found is None:
        return None
    digits = match.group(1)
    fd = 0
    if len(digits) > 20:  # int() refuses past 4300 digits; past 20 a uint64 overflows anyway
        fd = _MAX_FD
    elif digits:
        fd = min(int(digits), _MAX_FD)
    return Opening(name=found[0], expand=not found[1], chomp=match.group(2) == "-", fd=fd)


def _line_words(text: str) -> list[tuple[str, int, int]] | None:
    """The shell words of a logical line as BuildKit's heredoc finder sees them, with their
    offsets: quotes and backslashes kept, ``<<`` glued to the blanks after it. None when a
    quote is left open (BuildKit then finds no heredoc on the line at all). ``$`` is plain
    text here: BuildKit substitutes nothing for unset names, so only a ``${...}`` holding
    blanks or quotes, which makes no sensible delimiter, could split otherwise."""
    words: list[tuple[str, int, int]] = []
    start = -1
    i = 0

    def close(end: int) -> None:
        nonlocal start
        if start >= 0:
            words.append((text[start:end], start, end))
            start = -1

    while i < len(text):
        ch = text[i]
        if _space(ch):
            close(i)
            i += 1
            continue
        if start < 0:
            start = i
        if ch in "'\"":
            i += 1
            while i < len(text) and text[i] != ch:
                if ch == '"' and text[i] == "\\" and i + 1 < len(text) and text[i + 1] in '"$\\':
                    i += 1
                i += 1
            if i >= len(text):
                return None
            i += 1
        elif ch == "\\":
            i += 2
        elif text.startswith("<<", i):
            i += 2
            while i < len(text) and text[i] in "\t\r ":
                i += 1
        else:
            i += 1
    close(len(text))
    return words


def find_openings(text: str) -> list[OpeningWord] | None:
    """Every heredoc opened on the logical line ``text``, in order; None when an unclosed
    quote keeps BuildKit from looking (then no line after this one is a body)."""
    words = _line_words(text)
    if words is None:
        return None
    found: list[OpeningWord] = []
    for word, start, end in words:
        try:
            opening = parse_opening(word)
        except ValueError:  # a balanced line word cannot hold an unbalanced delimiter
            continue
        if opening is not None:
            found.append(OpeningWord(opening, word, start, end))
    return found


def read_heredocs(
    found: Sequence[OpeningWord],
    logical: Logical,
    arg_starts: Sequence[int],
    lines: Sequence[str],
    index: int,
    report: Report,
) -> tuple[list[RawHeredoc], int]:
    """The bodies of ``found``, read in order from ``lines[index:]``; and the index of the
    first line after the last body. Each heredoc is tied to the arguments (``arg_starts``:
    their offsets in the line) that its opening word covers."""
    out: list[RawHeredoc] = []
    for one in found:
        name = one.opening.name
        body: list[str] = []
        terminated = False
        while index < len(lines):
            raw = lines[index]
            index += 1
            candidate = raw.rstrip("\r\n")
            if one.opening.chomp:
                candidate = candidate.lstrip("\t")
            if candidate == name:
                terminated = True
                break
            body.append(raw + "\n")
        line, col = logical.at(one.start)
        if not terminated:
            report(
                f"unterminated heredoc {one.word}: no line reading {name!r} before the end "
                "of the file",
                line,
                col,
                "unterminated-heredoc",
            )
        covered = [k for k, at in enumerate(arg_starts) if one.start <= at < one.end]
        out.append(
            RawHeredoc(
                name=name,
                content="".join(body),
                expand=one.opening.expand,
                chomp=one.opening.chomp,
                arg_index=covered[0] if covered else -1,
                arg_count=len(covered),
                fd=one.opening.fd,
                line=line,
                col=col,
            )
        )
    return out, index
