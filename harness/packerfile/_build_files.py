"""ADD, COPY and CAT records: sources (files or heredocs) and a destination.

The three share one argument shape (sources..., dest) and are the only instructions that
carry heredocs, so they are built together, apart from the others.
"""

from __future__ import annotations

import re

from harness.errors import Location
from harness.packerfile._build_base import arg_spans, common_fields
from harness.packerfile._flags import Flags, parse_flags
from harness.packerfile._heredoc import parse_opening
from harness.packerfile._problems import Sink
from harness.packerfile._raw import RawHeredoc, RawInstruction, Word
from harness.packerfile._records import Add, Cat, Copy, Heredoc

__all__ = ["build_add", "build_cat", "build_copy"]

_LEADING_TABS = re.compile(r"(?m)^\t+")


def _opens_heredoc(word: str) -> bool:
    # BuildKit's MustParseHeredoc: a word with an unclosed quote opens nothing.
    try:
        return parse_opening(word) is not None
    except ValueError:
        return False


def _covered(raw: RawInstruction) -> dict[int, RawHeredoc]:
    """Argument index -> the heredoc whose opening covers it. ``<< EOF`` covers two words:
    BuildKit's COPY would then look for files named ``<<`` and ``EOF`` and drop the body it
    read; we take the two words for the heredoc the shell, and the author, mean. A heredoc
    opened inside a word covers none and, as in BuildKit, is read but not used."""
    return {
        k: doc for doc in raw.heredocs for k in range(doc.arg_index, doc.arg_index + doc.arg_count)
    }


def _heredoc(doc: RawHeredoc, sink: Sink) -> Heredoc:
    content = _LEADING_TABS.sub("", doc.content) if doc.chomp else doc.content
    return Heredoc(
        name=doc.name,
        content=content,
        expand=doc.expand,
        chomp=doc.chomp,
        location=sink.at(doc.line, doc.col),
    )


def _copy_like(
    raw: RawInstruction, keyword: str, sink: Sink
) -> tuple[Flags, dict[str, Location], list[str], str, tuple[Heredoc, ...]] | None:
    """Flags, spans, sources, dest and heredocs shared by ADD, COPY and CAT."""
    flags = parse_flags(keyword, raw.flags, sink)
    where = arg_spans(raw, flags, sink)
    if len(raw.args) < 2:
        sink.error(
            f"{keyword} requires at least two arguments: one or more sources and a destination",
            sink.at(raw.line, raw.col),
            "arguments",
        )
        return None
    dest = raw.args[-1]
    covered = _covered(raw)
    if not raw.json and (_opens_heredoc(dest.text) or len(raw.args) - 1 in covered):
        sink.error(
            f"{keyword} cannot accept a heredoc as a destination",
            sink.at(dest.line, dest.col),
            "heredoc-dest",
        )
        return None
    sources: list[str] = []
    for i, word in enumerate(raw.args[:-1]):
        if i not in covered:
            where[f"source:{len(sources)}"] = sink.at(word.line, word.col)
            sources.append(word.text)
    heredocs = tuple(_heredoc(doc, sink) for doc in raw.heredocs if doc.arg_count)
    return flags, where, sources, dest.text, heredocs


def build_add(raw: RawInstruction, sink: Sink) -> Add | None:
    parts = _copy_like(raw, "ADD", sink)
    if parts is None:
        return None
    flags, where, sources, dest, heredocs = parts
    return Add(
        **common_fields(raw, sink),  # type: ignore[arg-type]
        spans=where,
        sources=tuple(sources),
        dest=dest,
        checksum=flags.get("checksum"),
        keep_git_dir=flags.flag("keep-git-dir"),
        chown=flags.get("chown"),
        chmod=flags.get("chmod"),
        link=flags.flag("link"),
        exclude=flags.many("exclude"),
        heredocs=heredocs,
    )


def build_copy(raw: RawInstruction, sink: Sink) -> Copy | None:
    parts = _copy_like(raw, "COPY", sink)
    if parts is None:
        return None
    flags, where, sources, dest, heredocs = parts
    return Copy(
        **common_fields(raw, sink),  # type: ignore[arg-type]
        spans=where,
        from_=flags.get("from"),
        sources=tuple(sources),
        dest=dest,
        parents=flags.flag("parents"),
        exclude=flags.many("exclude"),
        chown=flags.get("chown"),
        chmod=flags.get("chmod"),
        link=flags.flag("link"),
        heredocs=heredocs,
    )


def build_cat(raw: RawInstruction, sink: Sink) -> Cat | None:
    parts = _copy_like(raw, "CAT", sink)
    if parts is None:
        return None
    _, where, _, dest, _ = parts
    covered = _covered(raw)
    pieces: list[Heredoc] = []
    words: list[Word] = []

    def flush() -> None:
        # Plain words are text to write (the seed's CAT "hi" /path), joined by single spaces.
        if words:
            at = sink.at(words[0].line, words[0].col)
            text = " ".join(w.text for w in words)
            pieces.append(Heredoc(name="", content=text, expand=True, chomp=False, location=at))
            words.clear()

    for i, word in enumerate(raw.args[:-1]):
        doc = covered.get(i)
        if doc is None:
            words.append(word)
        elif doc.arg_index == i:
            flush()
            pieces.append(_heredoc(doc, sink))
    flush()
    return Cat(
        **common_fields(raw, sink),  # type: ignore[arg-type]
        spans=where,
        content="".join(p.content for p in pieces),
        dest=dest,
        parts=tuple(pieces),
    )
