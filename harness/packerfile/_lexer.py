"""Text to raw instructions: directives, comments, continuations, flags, words and heredocs.

This layer knows the Dockerfile format as BuildKit reads it and nothing about what the nine
instructions mean, except which argument form each one takes and which may carry heredocs.
Every word keeps the line and column where it was written, also across continuation lines.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from harness.errors import Location, PackerfileError, PackerfileWarning
from harness.packerfile._records import Directive

__all__ = [
    "LexResult",
    "RawFlag",
    "RawHeredoc",
    "RawInstruction",
    "Word",
    "lex",
    "squeeze",
    "unquote_heredoc_word",
]

_DIRECTIVE_RE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_KNOWN_DIRECTIVES = frozenset({"syntax", "escape", "check"})
_HEREDOC_RE = re.compile(r"^(\d*)<<(-?)([^<]*)$")
# BuildKit splits FROM and list-form arguments on these only (no newline can occur here).
_BLANKS = frozenset("\t\v\f\r ")
_JSON_BLANKS = frozenset(" \t\n\r")
_DECODER = json.JSONDecoder()

# Which argument grammar each instruction uses (BuildKit's dispatch table).
_FORMS = {
    "ADD": "list",
    "CAT": "list",
    "COPY": "list",
    "CONVERT": "list",
    "QUANTIZE": "list",
    "CMD": "cmd",
    "FROM": "from",
    "ARG": "words",
    "LABEL": "words",
}
_HEREDOC_INSTRUCTIONS = frozenset({"ADD", "COPY", "CAT"})


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
    name: str
    content: str
    expand: bool
    chomp: bool
    arg_index: int
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


class _Logical:
    """A logical line glued from pieces of physical lines, remembering where each char was."""

    def __init__(self) -> None:
        self._chars: list[str] = []
        self._where: list[tuple[int, int]] = []

    def add(self, piece: str, line: int, first_col: int) -> None:
        for k, ch in enumerate(piece):
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


def _physical_lines(text: str) -> list[str]:
    # Split on "\n" only: str.splitlines would also break on form feeds and U+2028.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _continues(line: str, escape: str) -> tuple[str, bool]:
    """Strip a trailing escape char that continues the line (not one that is itself escaped)."""
    trimmed = line.rstrip(" \t")
    if trimmed.endswith(escape) and (len(trimmed) == 1 or trimmed[-2] != escape):
        return trimmed[:-1], True
    return line, False


class _Lexer:
    def __init__(self, text: str, path: str) -> None:
        self.path = path
        self.lines = _physical_lines(text.removeprefix("\ufeff"))
        self.escape = "\\"
        self.directives: list[Directive] = []
        self.instructions: list[RawInstruction] = []
        self.problems: list[PackerfileError] = []

    def error(self, message: str, line: int, col: int, code: str) -> None:
        self.problems.append(PackerfileError(message, Location(self.path, line, col), code=code))

    def warn(self, message: str, line: int, col: int, code: str) -> None:
        self.problems.append(PackerfileWarning(message, Location(self.path, line, col), code=code))

    def run(self) -> LexResult:
        index = self._directives()
        while index < len(self.lines):
            index = self._logical_line(index)
        return LexResult(
            escape=self.escape,
            directives=tuple(self.directives),
            instructions=tuple(self.instructions),
            problems=tuple(self.problems),
        )

    def _directives(self) -> int:
        """Read the directive block at the very top; return the index of the first other line."""
        seen: set[str] = set()
        for index, raw in enumerate(self.lines):
            line = raw.rstrip("\r\n")
            stripped = line.lstrip()
            match = _DIRECTIVE_RE.match(stripped)
            if match is None or match.group(1).lower() not in _KNOWN_DIRECTIVES:
                return index
            name = match.group(1).lower()
            value = match.group(2)
            lineno = index + 1
            col = len(line) - len(stripped) + match.start(2) + 1
            if name in seen:
                self.error(
                    f"only one {name} parser directive can be used", lineno, col, "directive"
                )
                continue
            seen.add(name)
            if name == "escape":
                if value not in ("\\", "`"):
                    self.error(
                        f"invalid escape token {value!r}: the escape directive takes \\ or `",
                        lineno,
                        col,
                        "directive",
                    )
                    continue
                self.escape = value
            self.directives.append(Directive(name, value, Location(self.path, lineno, col)))
        return len(self.lines)

    def _late_directive(self, stripped: str, lineno: int, indent: int) -> None:
        # Docker reads these as plain comments; say so, since the author surely meant more.
        match = _DIRECTIVE_RE.match(stripped)
        if match is not None and match.group(1).lower() in _KNOWN_DIRECTIVES:
            self.warn(
                f"'{match.group(1)}' parser directive ignored: directives must come first in the "
                "file, before any instruction, comment or blank line",
                lineno,
                indent + 1,
                "directive-late",
            )

    def _logical_line(self, index: int) -> int:
        line = self.lines[index].rstrip("\r\n")
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        first_line = index + 1
        if stripped.startswith("#"):
            self._late_directive(stripped, first_line, indent)
            return index + 1
        if not stripped:
            return index + 1
        logical = _Logical()
        piece, more = _continues(stripped, self.escape)
        logical.add(piece, first_line, indent + 1)
        index += 1
        while more and index < len(self.lines):
            raw = self.lines[index].rstrip("\r\n")
            index += 1
            if raw.lstrip().startswith("#"):
                continue
            if not raw.strip():
                self.warn(
                    "empty continuation line (Docker will make this an error)",
                    index,
                    1,
                    "empty-continuation",
                )
                continue
            piece, more = _continues(raw, self.escape)
            logical.add(piece, index, 1)
        if not logical.text.strip():
            return index
        return self._instruction(logical, first_line, index)

    def _instruction(self, logical: _Logical, first_line: int, index: int) -> int:
        text = logical.text
        start = _skip(text, 0, str.isspace)
        end = _skip(text, start, lambda c: not c.isspace())
        keyword = text[start:end]
        kw_line, kw_col = logical.at(start)
        form = _FORMS.get(keyword.upper(), "none")
        flags, args_start = self._flags(logical, _skip(text, end, str.isspace))
        args_text = text[args_start:].rstrip()
        args_line, args_col = logical.at(args_start)
        args: list[Word]
        is_json = False
        if form in ("list", "cmd") and args_text.startswith("["):
            decoded = _json_array(args_text)
            if decoded is not None:
                bad = [(v, off) for v, off in decoded if not isinstance(v, str)]
                if bad:
                    line, col = logical.at(args_start + bad[0][1])
                    self.error(
                        "when using JSON array syntax, arrays must be comprised of strings only",
                        line,
                        col,
                        "json-strings",
                    )
                    return index
                is_json = True
                args = [Word(str(v), *logical.at(args_start + off)) for v, off in decoded]
            else:
                args = self._fallback_args(form, logical, args_start, args_text)
        elif form == "words":
            args = _shell_words(logical, args_start, len(text), self.escape)
        else:
            args = self._fallback_args(form, logical, args_start, args_text)
        heredocs: list[RawHeredoc] = []
        if keyword.upper() in _HEREDOC_INSTRUCTIONS and not is_json and "<<" in text:
            index = self._heredocs(args, heredocs, index)
        self.instructions.append(
            RawInstruction(
                keyword=keyword,
                line=kw_line,
                col=kw_col,
                end_line=max(index, first_line),
                text=text.strip(),
                flags=tuple(flags),
                args=tuple(args),
                args_text=args_text,
                args_line=args_line,
                args_col=args_col,
                json=is_json,
                heredocs=tuple(heredocs),
            )
        )
        return index

    def _fallback_args(
        self, form: str, logical: _Logical, start: int, args_text: str
    ) -> list[Word]:
        if form == "cmd":
            # The shell form: one word holding the whole rest (CMD then refuses it).
            return [Word(args_text, *logical.at(start))] if args_text else []
        return _blank_split(logical, start, start + len(args_text))

    def _flags(self, logical: _Logical, start: int) -> tuple[list[RawFlag], int]:
        """Leading ``--flag`` words, as BuildKit's extractBuilderFlags reads them."""
        text = logical.text
        flags: list[RawFlag] = []
        i = start
        while True:
            i = _skip(text, i, str.isspace)
            if not text.startswith("--", i):
                return flags, i
            word_start = i
            buf: list[str] = []
            while i < len(text) and not text[i].isspace():
                ch = text[i]
                if ch in "'\"":
                    i += 1
                    while i < len(text) and text[i] != ch:
                        if text[i] == self.escape:
                            i += 1
                            if i >= len(text):
                                break
                        buf.append(text[i])
                        i += 1
                    i += 1
                    continue
                if ch == self.escape:
                    if i + 1 < len(text):
                        buf.append(text[i + 1])
                    i += 2
                    continue
                buf.append(ch)
                i += 1
            word = "".join(buf)
            if word == "--":
                return flags, _skip(text, i, str.isspace)
            name, sep, value = word[2:].partition("=")
            line, col = logical.at(word_start)
            flags.append(RawFlag(name, value if sep else None, line, col))

    def _heredocs(self, args: list[Word], out: list[RawHeredoc], index: int) -> int:
        for arg_index, word in enumerate(args):
            match = _HEREDOC_RE.match(word.text)
            if match is None or not match.group(3):
                continue
            name, quoted = unquote_heredoc_word(match.group(3))
            if not name or any(c.isspace() for c in name):
                continue
            chomp = match.group(2) == "-"
            body: list[str] = []
            terminated = False
            while index < len(self.lines):
                raw = self.lines[index]
                index += 1
                candidate = raw.rstrip("\r\n")
                if chomp:
                    candidate = candidate.lstrip("\t")
                if candidate == name:
                    terminated = True
                    break
                body.append(raw + "\n")
            if not terminated:
                self.error(
                    f"unterminated heredoc {word.text}: no line reading {name!r} before the end "
                    "of the file",
                    word.line,
                    word.col,
                    "unterminated-heredoc",
                )
                # A last body line that had no newline in the file gets none here either.
            out.append(
                RawHeredoc(
                    name=name,
                    content="".join(body),
                    expand=not quoted,
                    chomp=chomp,
                    arg_index=arg_index,
                    line=word.line,
                    col=word.col,
                )
            )
        return index


def _skip(text: str, i: int, pred: Callable[[str], bool]) -> int:
    while i < len(text) and pred(text[i]):
        i += 1
    return i


def _blank_split(logical: _Logical, start: int, stop: int) -> list[Word]:
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


def _shell_words(logical: _Logical, start: int, stop: int, escape: str) -> list[Word]:
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


def _json_array(text: str) -> list[tuple[object, int]] | None:
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


def unquote_heredoc_word(word: str) -> tuple[str, bool]:
    """The heredoc delimiter without quotes, and whether any part of it was quoted."""
    out: list[str] = []
    quoted = False
    quote = ""
    i = 0
    while i < len(word):
        ch = word[i]
        if quote:
            if ch == quote:
                quote = ""
            elif ch == "\\" and quote == '"' and i + 1 < len(word):
                i += 1
                out.append(word[i])
            else:
                out.append(ch)
        elif ch in "'\"":
            quote = ch
            quoted = True
        elif ch == "\\" and i + 1 < len(word):
            i += 1
            out.append(word[i])
        else:
            out.append(ch)
        i += 1
    return "".join(out), quoted


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


def lex(text: str, path: str) -> LexResult:
    """Split ``text`` into raw instructions; problems are collected, never raised."""
    return _Lexer(text, path).run()
