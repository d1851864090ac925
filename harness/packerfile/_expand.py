"""Variable substitution as BuildKit's shell lexer does it, in two modes.

``expand_word`` is Docker's ProcessWord: quotes are processed (``'...'`` literal, ``"..."``
expanding), the escape char escapes any char outside quotes. ``expand_raw`` keeps quotes and
backslashes as written and only substitutes ``$VAR``/``${...}``; an escape char before ``$`` or
before itself still escapes. Raw mode serves text that is not shell words: CMD's JSON strings
(a chat template full of quotes must survive) and heredoc bodies (a system prompt's backslashes
must survive; BuildKit eats them, which we do not copy).

Supported forms: ``$NAME``, ``${NAME}``, ``${NAME:-word}``, ``${NAME-word}``, ``${NAME:+word}``,
``${NAME+word}``, ``${NAME:?message}``, ``${NAME?message}``. An unset name expands to the empty
string, as in Docker; bare uses of unset names are reported in ``Expanded.undefined``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["MAX_NESTING", "ExpandError", "Expanded", "expand_raw", "expand_word"]

_SPECIAL_PARAMS = frozenset("@*#?-$!0")
#: How deep ``${A:-${B:-...}}`` may nest. No real file comes close; the bound keeps the
#: recursive expander well inside Python's stack whoever calls it (BuildKit's Go has none).
MAX_NESTING = 100


class ExpandError(Exception):
    """A substitution that cannot be done; ``syntax`` is False for ``${X:?}`` on an unset X."""

    def __init__(self, message: str, *, syntax: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.syntax = syntax


@dataclass(frozen=True)
class Expanded:
    value: str
    undefined: tuple[str, ...]


class _Expander:
    def __init__(self, text: str, env: Mapping[str, str], escape: str, quotes: bool) -> None:
        self.text = text
        self.pos = 0
        self.env = env
        self.escape = escape
        self.quotes = quotes
        self.undefined: list[str] = []
        self.depth = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self) -> str:
        ch = self.peek()
        self.pos += 1
        return ch

    def run(self, stop: str = "") -> str:
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.peek()
            if stop and ch == stop:
                self.pos += 1
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
            elif self.quotes and ch == "'":
                out.append(self.single_quoted())
            elif self.quotes and ch == '"':
                out.append(self.double_quoted())
            else:
                self.pos += 1
                if ch != self.escape:
                    out.append(ch)
                elif self.quotes or (self.peek() and self.peek() in ("$", self.escape, stop)):
                    out.append(self.take())
                else:
                    out.append(ch)
        if stop:
            raise ExpandError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(out)

    def single_quoted(self) -> str:
        self.pos += 1
        end = self.text.find("'", self.pos)
        if end < 0:
            raise ExpandError("unexpected end of statement while looking for matching single-quote")
        value = self.text[self.pos : end]
        self.pos = end + 1
        return value

    def double_quoted(self) -> str:
        self.pos += 1
        out: list[str] = []
        while True:
            ch = self.peek()
            if not ch:
                raise ExpandError(
                    "unexpected end of statement while looking for matching double-quote"
                )
            if ch == '"':
                self.pos += 1
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            self.pos += 1
            if ch == self.escape:
                nxt = self.peek()
                if not nxt:
                    continue
                if nxt in ('"', "$", self.escape):
                    ch = self.take()
            out.append(ch)

    def name(self) -> str:
        start = self.pos
        ch = self.peek()
        if ch.isdigit():
            while self.peek().isdigit():
                self.pos += 1
            return self.text[start : self.pos]
        if ch and ch in _SPECIAL_PARAMS:
            self.pos += 1
            return ch
        while self.peek() and (self.peek().isalnum() or self.peek() == "_"):
            self.pos += 1
        return self.text[start : self.pos]

    def lookup(self, name: str) -> str:
        if name in self.env:
            return self.env[name]
        if name not in self.undefined:
            self.undefined.append(name)
        return ""

    def dollar(self) -> str:
        self.pos += 1
        if self.peek() != "{":
            name = self.name()
            return self.lookup(name) if name else "$"
        self.pos += 1
        ch = self.peek()
        if not ch:
            raise ExpandError("syntax error: missing '}'")
        if ch in "{}:":
            raise ExpandError("syntax error: bad substitution")
        name = self.name()
        ch = self.take()
        if not ch:
            raise ExpandError("syntax error: missing '}'")
        if ch == "}":
            return self.lookup(name)
        modifier = ch
        null_is_unset = ch == ":"
        if null_is_unset:
            ch = self.take()
            modifier += ch
        if not ch:
            raise ExpandError("syntax error: missing '}'")
        if ch not in ("-", "+", "?"):
            raise ExpandError(f"unsupported modifier ({modifier}) in substitution")
        if self.depth >= MAX_NESTING:
            raise ExpandError(
                f"nested too deeply: more than {MAX_NESTING} substitutions within one another"
            )
        self.depth += 1
        try:
            word = self.run(stop="}")
        except ExpandError:
            if not self.peek():
                raise ExpandError("syntax error: missing '}'") from None
            raise
        finally:
            self.depth -= 1
        is_set = name in self.env
        value = self.env.get(name, "")
        unset = not is_set or (null_is_unset and value == "")
        if ch == "-":
            return word if unset else value
        if ch == "+":
            return "" if unset else word
        if not is_set:
            raise ExpandError(f"{name}: {word or 'is not allowed to be unset'}", syntax=False)
        if null_is_unset and value == "":
            raise ExpandError(f"{name}: {word or 'is not allowed to be empty'}", syntax=False)
        return value


def expand_word(text: str, env: Mapping[str, str], *, escape: str = "\\") -> Expanded:
    """Substitute variables and remove quotes, like one word of a Dockerfile instruction."""
    expander = _Expander(text, env, escape, quotes=True)
    value = expander.run()
    return Expanded(value, tuple(expander.undefined))


def expand_raw(text: str, env: Mapping[str, str], *, escape: str = "\\") -> Expanded:
    """Substitute variables only; quotes and other escapes stay as written."""
    expander = _Expander(text, env, escape, quotes=False)
    value = expander.run()
    return Expanded(value, tuple(expander.undefined))
