"""``.ggufpackerignore``: which context paths a build leaves out, with .dockerignore rules.

One pattern a line; ``#`` at the very start of a line makes a comment; ``!`` re-includes what
an earlier pattern excluded; the last matching pattern wins. ``*`` and ``?`` stay within one
path segment, ``**`` spans any number of them, ``[...]`` is a character class, ``\\`` escapes.
A pattern also covers everything below a directory it matches. Patterns and paths are relative
to the context root (a leading ``/`` is dropped).
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

from harness.errors import Location, PackerfileError, UsageError
from harness.packerfile._problems import raise_problems

__all__ = ["IGNORE_FILE", "IgnoreMatcher", "IgnorePattern", "load_ignore", "parse_ignore"]

IGNORE_FILE = ".ggufpackerignore"
DOCKER_IGNORE_FILE = ".dockerignore"


@dataclass(frozen=True)
class IgnorePattern:
    pattern: str
    exclusion: bool
    regex: re.Pattern[str]
    location: Location


def _clean(path: str) -> str:
    # Go's filepath.Clean: normpath, but "//x" collapses to "/x" too.
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def _class_char(pattern: str, i: int) -> tuple[str, int] | None:
    """The class character at ``i`` (``\\x`` stands for x) and the index after it; None where
    Go's filepath.Match calls the pattern malformed: nothing left, or an unescaped - or ]."""
    if i < len(pattern) and pattern[i] == "\\":
        i += 1
    elif i < len(pattern) and pattern[i] in "-]":
        return None
    if i >= len(pattern):
        return None
    return pattern[i], i + 1


def _char_class(pattern: str, start: int) -> tuple[str, int] | None:
    """The regex for the class opening at ``start``, and the index after it; None when
    BuildKit refuses it: Go's filepath.Match syntax (``lo`` or ``lo-hi`` items, at least one),
    and no reversed range, which Go's regexp refuses. Every character is escaped, so Python
    reads none as a set operation (``--``, ``&&``) or a nested class."""
    i = start + 1
    negated = pattern.startswith("^", i)
    if negated:
        i += 1
    items: list[str] = []
    while not (pattern.startswith("]", i) and items):
        found = _class_char(pattern, i)
        if found is None:
            return None
        lo, i = found
        hi = lo
        if pattern.startswith("-", i):
            found = _class_char(pattern, i + 1)
            if found is None:
                return None
            hi, i = found
        if hi < lo:
            return None
        items.append(re.escape(lo) if hi == lo else f"{re.escape(lo)}-{re.escape(hi)}")
    return ("[^" if negated else "[") + "".join(items) + "]", i + 1


def _translate(pattern: str) -> str | None:
    """The anchored regex for a cleaned pattern; None when the pattern is malformed."""
    out = ["^"]
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*" and pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
            out.append(".*" if i >= len(pattern) else "(?:.*/)?")
            continue
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\":
            if i + 1 >= len(pattern):
                return None
            out.append(re.escape(pattern[i + 1]))
            i += 1
        elif ch == "[":
            found = _char_class(pattern, i)
            if found is None:
                return None
            out.append(found[0])
            i = found[1]
            continue
        else:
            out.append(re.escape(ch))
        i += 1
    out.append("$")
    return "".join(out)


class IgnoreMatcher:
    """Answers whether a context-relative path is left out of the build context."""

    def __init__(self, patterns: Sequence[IgnorePattern] = ()) -> None:
        self.patterns = tuple(patterns)

    def ignored(self, relpath: str | os.PathLike[str]) -> bool:
        path = PurePath(relpath).as_posix()
        path = _clean(path).lstrip("/")
        if path in ("", "."):
            return False
        parents = path.split("/")[:-1]
        matched = False
        for pattern in self.patterns:
            # An exclusion can only undo a match, an inclusion only make one.
            if pattern.exclusion != matched:
                continue
            hit = pattern.regex.match(path) is not None or any(
                pattern.regex.match("/".join(parents[: i + 1])) for i in range(len(parents))
            )
            if hit:
                matched = not pattern.exclusion
        return matched


def parse_ignore(text: str, path: str = IGNORE_FILE) -> IgnoreMatcher:
    """Read ignore-file text; a malformed pattern raises PackerfileError at its line."""
    patterns: list[IgnorePattern] = []
    problems: list[PackerfileError] = []
    for number, line in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
        if line.startswith("#"):
            continue
        stripped = line.strip()
        if not stripped:
            continue
        where = Location(path, number, len(line) - len(line.lstrip()) + 1)
        exclusion = stripped.startswith("!")
        body = stripped[1:].strip() if exclusion else stripped
        if not body:
            problems.append(PackerfileError('illegal exclusion pattern: "!"', where, code="ignore"))
            continue
        cleaned = _clean(body)
        if len(cleaned) > 1 and cleaned.startswith("/"):
            cleaned = cleaned[1:]
        regex = _translate(cleaned)
        if regex is None:
            problems.append(
                PackerfileError(f"syntax error in pattern {body!r}", where, code="ignore")
            )
            continue
        patterns.append(IgnorePattern(cleaned, exclusion, re.compile(regex, re.DOTALL), where))
    raise_problems(problems)
    return IgnoreMatcher(patterns)


def load_ignore(context_dir: str | os.PathLike[str]) -> IgnoreMatcher:
    """A context's ``.ggufpackerignore``, else its ``.dockerignore`` (what BuildKit reads, so
    the native and the buildx builder leave out the same files); a matcher that ignores nothing
    when there is neither. Every directory context has one: the main and each named one."""
    context = Path(context_dir)
    if not context.is_dir():
        raise UsageError(f"build context {context} is not a directory")
    file = context / IGNORE_FILE
    if not file.is_file():
        file = context / DOCKER_IGNORE_FILE
    if not file.is_file():
        return IgnoreMatcher()
    data = file.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        # Where a person can look: the line and column of the first bad byte.
        line = data.count(b"\n", 0, err.start) + 1
        col = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise PackerfileError(
            f"{file.name} is not UTF-8 text", Location(file, line, col), code="encoding"
        ) from None
    return parse_ignore(text, str(file))
