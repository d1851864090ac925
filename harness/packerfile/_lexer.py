"""Text to raw instructions: directives, comments, continuations, flags, words and heredocs.

This layer knows the Dockerfile format as BuildKit reads it and nothing about what the nine
instructions mean, except which argument form each one takes and which may carry heredocs.
It cuts every instruction BuildKit knows, also those a Packerfile refuses (the record builder
refuses them), so that the lines around them are read as BuildKit reads them.
Every word keeps the line and column where it was written, also across continuation lines.
Cutting a logical line into words lives in _words, heredoc bodies in _heredoc; this module
walks the physical lines and decides which of them make one instruction.
"""

from __future__ import annotations

import re

from harness.errors import Location, PackerfileError, PackerfileWarning
from harness.packerfile._heredoc import find_openings, parse_opening, read_heredocs
from harness.packerfile._problems import one_line
from harness.packerfile._raw import LexResult, RawFlag, RawHeredoc, RawInstruction, Word
from harness.packerfile._records import Directive
from harness.packerfile._words import (
    Logical,
    blank_split,
    json_array,
    leading_flags,
    shell_words,
    skip,
)

__all__ = ["LexResult", "lex"]

_DIRECTIVE_RE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_KNOWN_DIRECTIVES = frozenset({"syntax", "escape", "check"})

# Which argument grammar each instruction takes: BuildKit's dispatch table, all of it. A
# Packerfile refuses most of these instructions, but only once they are cut as BuildKit cuts
# them, so that a stray RUN heredoc is read as a heredoc and the lines below keep their meaning.
#   list:   a JSON array of strings, else words split on blanks (parseMaybeJSONToList)
#   exec:   a JSON array of strings, else the rest as one word (parseMaybeJSON)
#   blank:  words split on blanks (parseStringsWhitespaceDelimited)
#   words:  words split on blanks outside quotes, quotes kept (parseWords)
#   string: the rest as one word (parseString)
#   health: a type word, then the exec form (parseHealthConfig)
#   sub:    the rest as one word, itself an instruction (parseSubCommand)
# Any other keyword takes no arguments at all (parseIgnore).
_FORMS = {
    "ADD": "list",
    "CAT": "list",
    "COPY": "list",
    "CONVERT": "list",
    "QUANTIZE": "list",
    "VOLUME": "list",
    "CMD": "exec",
    "ENTRYPOINT": "exec",
    "RUN": "exec",
    "SHELL": "exec",
    "EXPOSE": "blank",
    "FROM": "blank",
    "ARG": "words",
    "ENV": "words",
    "LABEL": "words",
    "MAINTAINER": "string",
    "STOPSIGNAL": "string",
    "USER": "string",
    "WORKDIR": "string",
    "HEALTHCHECK": "health",
    "ONBUILD": "sub",
}
_HEREDOC_INSTRUCTIONS = frozenset({"ADD", "COPY", "CAT", "RUN"})


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
        where = Location(self.path, line, col)
        self.problems.append(PackerfileError(one_line(message), where, code=code))

    def warn(self, message: str, line: int, col: int, code: str) -> None:
        where = Location(self.path, line, col)
        self.problems.append(PackerfileWarning(one_line(message), where, code=code))

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
        logical = Logical()
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

    def _head(self, logical: Logical, start: int) -> tuple[str, int, list[RawFlag], int]:
        """The keyword from ``start`` on, where it starts, its flags, where its arguments start."""
        text = logical.text
        start = skip(text, start, str.isspace)
        end = skip(text, start, lambda c: not c.isspace())
        flags, args_start = leading_flags(logical, skip(text, end, str.isspace), self.escape)
        return text[start:end], start, flags, args_start

    def _arguments(self, form: str, logical: Logical, start: int) -> tuple[list[Word], bool] | None:
        """The argument words of ``form`` from ``start`` on and whether they were JSON; None
        when a JSON array holds something else than strings (reported here)."""
        text = logical.text
        rest = text[start:].rstrip()
        if form == "health":
            # A type word (CMD, NONE...), then CMD's own form for the rest.
            end = skip(text, start, lambda c: not c.isspace())
            if end == start:
                return [], False
            cmd = self._arguments("exec", logical, skip(text, end, str.isspace))
            if cmd is None:
                return None
            return [Word(text[start:end], *logical.at(start)), *cmd[0]], cmd[1]
        if form in ("list", "exec") and rest.startswith("["):
            decoded = json_array(rest)
            if decoded is not None:
                bad = [off for value, off in decoded if not isinstance(value, str)]
                if bad:
                    self.error(
                        "when using JSON array syntax, arrays must be comprised of strings only",
                        *logical.at(start + bad[0]),
                        "json-strings",
                    )
                    return None
                return [Word(str(v), *logical.at(start + off)) for v, off in decoded], True
        if form in ("list", "blank"):
            return blank_split(logical, start, start + len(rest)), False
        if form == "words":
            return shell_words(logical, start, len(text), self.escape), False
        if form in ("exec", "string", "sub") and rest:
            # The shell form: one word holding the whole rest (CMD then refuses it).
            return [Word(rest, *logical.at(start))], False
        return [], False

    def _instruction(self, logical: Logical, first_line: int, index: int) -> int:
        text = logical.text
        keyword, kw_start, flags, args_start = self._head(logical, 0)
        form = _FORMS.get(keyword.upper(), "ignore")
        cut = self._arguments(form, logical, args_start)
        if cut is None:
            return index
        args, is_json = cut
        # ONBUILD's argument is an instruction: its keyword and form say if heredocs follow
        # (one level down only, as in BuildKit).
        target, target_json = keyword, is_json
        if form == "sub" and args:
            target, _, _, sub_start = self._head(logical, args_start)
            sub = self._arguments(_FORMS.get(target.upper(), "ignore"), logical, sub_start)
            if sub is None:
                return index
            target_json = sub[1]
        heredocs: list[RawHeredoc] = []
        if target.upper() in _HEREDOC_INSTRUCTIONS and not target_json and "<<" in text:
            found = find_openings(text)
            if found is None:
                self._unread_heredocs(logical, args_start)
            else:
                starts = [logical.index(word) for word in args]
                heredocs, index = read_heredocs(
                    found, logical, starts, self.lines, index, self.error
                )
        args_line, args_col = logical.at(args_start)
        self.instructions.append(
            RawInstruction(
                keyword=keyword,
                line=logical.at(kw_start)[0],
                col=logical.at(kw_start)[1],
                end_line=max(index, first_line),
                text=text.strip(),
                flags=tuple(flags),
                args=tuple(args),
                args_text=text[args_start:].rstrip(),
                args_line=args_line,
                args_col=args_col,
                json=is_json,
                heredocs=tuple(heredocs),
            )
        )
        return index

    def _unread_heredocs(self, logical: Logical, start: int) -> None:
        # BuildKit gives up looking for heredocs on a line with an unclosed quote, so the
        # would-be body is read as instructions; say why, at the word that looked like one.
        for word in blank_split(logical, start, len(logical.text)):
            try:
                looks = parse_opening(word.text) is not None
            except ValueError:
                looks = True
            if looks:
                self.warn(
                    f"{word.text} opens no heredoc: the line has an unclosed quote, and BuildKit "
                    "then reads no heredoc on it (the lines below are instructions)",
                    word.line,
                    word.col,
                    "heredoc-unread",
                )
                return


def lex(text: str, path: str) -> LexResult:
    """Split ``text`` into raw instructions; problems are collected, never raised."""
    return _Lexer(text, path).run()
