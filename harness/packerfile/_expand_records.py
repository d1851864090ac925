"""Expanding one record's fields against one environment, reporting problems where written.

Apart from the planner because parse() runs the same walk with an empty environment to find
substitutions that can never work (``${}``, an unclosed quote) before any build args exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from harness.errors import Location
from harness.packerfile._build_base import cmd_history
from harness.packerfile._expand import ExpandError, expand_raw, expand_word
from harness.packerfile._problems import Sink
from harness.packerfile._records import (
    Add,
    Arg,
    Cat,
    Cmd,
    Convert,
    Copy,
    From,
    Heredoc,
    Instruction,
    Label,
    Quantize,
)
from harness.packerfile._words import squeeze

__all__ = ["Expansion", "expand_instruction", "syntax_check"]


def _excerpt(text: str) -> str:
    # The field as written, quoted; a long one (a 10 KiB default) cut to what a person reads.
    return repr(text) if len(text) <= 120 else f"{text[:100]!r}... ({len(text)} characters)"


class Expansion:
    """Expands fields against one environment, reporting problems at each field's location."""

    def __init__(
        self, sink: Sink, escape: str, env: Mapping[str, str], *, syntax_only: bool = False
    ) -> None:
        self.sink = sink
        self.escape = escape
        self.env = env
        self.syntax_only = syntax_only
        self._warned: set[tuple[str, Location]] = set()

    def _run(self, text: str, where: Location, raw: bool, escape: str) -> str:
        try:
            result = (expand_raw if raw else expand_word)(text, self.env, escape=escape)
        except ExpandError as err:
            if err.syntax or not self.syntax_only:
                self.sink.error(f"{err.message} in {_excerpt(text)}", where, "expand")
            return text
        if not self.syntax_only:
            for name in result.undefined:
                if (name, where) not in self._warned:
                    self._warned.add((name, where))
                    self.sink.warn(
                        f"variable {name!r} is not defined here: it expands to an empty string",
                        where,
                        "undefined-variable",
                    )
        return result.value

    def word(self, text: str, where: Location) -> str:
        return self._run(text, where, False, self.escape)

    def raw(self, text: str, where: Location, escape: str | None = None) -> str:
        return self._run(text, where, True, escape or self.escape)

    def optional(self, text: str | None, where: Location) -> str | None:
        # An optional flag that expands to "" is not given: ARG IMATRIX= switches it off.
        return (self.word(text, where) or None) if text is not None else None

    def names(self, values: tuple[str, ...], where: Location) -> tuple[str, ...]:
        out: list[str] = []
        for value in values:
            out.extend(v for v in self.word(value, where).split(",") if v)
        return tuple(out)

    def heredoc(self, doc: Heredoc) -> Heredoc:
        if not doc.name:
            return replace(doc, content=self.word(doc.content, doc.location))
        if not doc.expand:
            return doc
        # Heredoc bodies escape with backslash whatever the escape directive says, as in Docker.
        return replace(doc, content=self.raw(doc.content, doc.location, "\\"))

    def history(self, original: str) -> str:
        text = squeeze(original, self.escape)
        try:
            return expand_raw(text, self.env, escape=self.escape).value
        except ExpandError:
            return text


def expand_instruction(record: Instruction, x: Expansion) -> Instruction:
    """A copy of ``record`` with every expandable field expanded (not ARG: see _Planner)."""
    w = record.where
    created_by = x.history(record.original)
    if isinstance(record, Add):
        return replace(
            record,
            created_by=created_by,
            sources=tuple(x.word(s, w(f"source:{i}")) for i, s in enumerate(record.sources)),
            dest=x.word(record.dest, w("dest")),
            checksum=x.optional(record.checksum, w("flag:checksum")),
            chown=x.optional(record.chown, w("flag:chown")),
            chmod=x.optional(record.chmod, w("flag:chmod")),
            exclude=tuple(x.word(e, w("flag:exclude")) for e in record.exclude),
            heredocs=tuple(x.heredoc(h) for h in record.heredocs),
        )
    if isinstance(record, Copy):
        return replace(
            record,
            created_by=created_by,
            from_=x.optional(record.from_, w("flag:from")),
            sources=tuple(x.word(s, w(f"source:{i}")) for i, s in enumerate(record.sources)),
            dest=x.word(record.dest, w("dest")),
            chown=x.optional(record.chown, w("flag:chown")),
            chmod=x.optional(record.chmod, w("flag:chmod")),
            exclude=tuple(x.word(e, w("flag:exclude")) for e in record.exclude),
            heredocs=tuple(x.heredoc(h) for h in record.heredocs),
        )
    if isinstance(record, Cat):
        parts = tuple(x.heredoc(p) for p in record.parts)
        return replace(
            record,
            created_by=created_by,
            parts=parts,
            content="".join(p.content for p in parts),
            dest=x.word(record.dest, w("dest")),
        )
    if isinstance(record, Convert):
        return replace(
            record,
            created_by=created_by,
            from_=x.optional(record.from_, w("flag:from")),
            type=x.word(record.type, w("flag:type")),
            cls=x.word(record.cls, w("flag:class")),
            base=x.optional(record.base, w("flag:base")),
            source=x.word(record.source, w("source")),
            dest=x.word(record.dest, w("dest")),
        )
    if isinstance(record, Quantize):
        return replace(
            record,
            created_by=created_by,
            from_=x.optional(record.from_, w("flag:from")),
            type=x.word(record.type, w("flag:type")),
            imatrix=x.optional(record.imatrix, w("flag:imatrix")),
            include_weights=x.names(record.include_weights, w("flag:include-weights")),
            exclude_weights=x.names(record.exclude_weights, w("flag:exclude-weights")),
            output_tensor_type=x.optional(record.output_tensor_type, w("flag:output-tensor-type")),
            token_embedding_type=x.optional(
                record.token_embedding_type, w("flag:token-embedding-type")
            ),
            source=x.word(record.source, w("source")),
            dest=x.word(record.dest, w("dest")),
        )
    if isinstance(record, Cmd):
        # JSON strings are not shell words: substitute variables, keep every quote.
        args = tuple(x.raw(a, w(f"arg:{i}")) for i, a in enumerate(record.args))
        return replace(record, created_by=cmd_history(record.keyword, args), args=args)
    if isinstance(record, Label):
        return replace(
            record,
            created_by=created_by,
            items=tuple(
                (x.word(k, w(f"key:{i}")), x.word(v, w(f"key:{i}")))
                for i, (k, v) in enumerate(record.items)
            ),
        )
    return record


def syntax_check(record: Instruction | From, escape: str, sink: Sink) -> None:
    """Report substitutions that can never work (``${}``, unclosed quotes), before any plan."""
    x = Expansion(sink, escape, {}, syntax_only=True)
    if isinstance(record, From):
        x.word(record.image, record.where("image"))
        x.optional(record.platform, record.where("flag:platform"))
    elif isinstance(record, Arg):
        if record.default is not None:
            x.word(record.default, record.location)
    else:
        expand_instruction(record, x)
