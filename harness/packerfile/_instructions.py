"""Raw instructions to typed records: flags, arity and argument forms of the nine.

Records hold the text as written; values are judged in _checks and expanded in _plan.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence

from harness.errors import Location
from harness.packerfile._flags import Flags, parse_flags
from harness.packerfile._lexer import RawHeredoc, RawInstruction, Word, squeeze
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
from harness.packerfile._types import DEFAULT_CONVERT_TYPE, DEFAULT_QUANTIZE_TYPE

__all__ = ["INSTRUCTIONS", "RESERVED_STAGE_NAMES", "build", "cmd_history"]

INSTRUCTIONS = ("ADD", "ARG", "CAT", "CMD", "COPY", "CONVERT", "FROM", "LABEL", "QUANTIZE")
RESERVED_STAGE_NAMES = ("scratch", "context")
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9-_.]*$")
_HEREDOC_WORD = re.compile(r"^\d*<<-?[^<]+$")
_LEADING_TABS = re.compile(r"(?m)^\t+")


def _common(raw: RawInstruction, sink: Sink) -> dict[str, object]:
    return {
        "location": sink.at(raw.line, raw.col),
        "keyword": raw.keyword,
        "original": raw.text,
        "created_by": squeeze(raw.text, sink.escape),
    }


def cmd_history(keyword: str, args: Sequence[str]) -> str:
    """CMD's history entry: the keyword as written, then its arguments as one JSON array."""
    return f"{keyword} {json.dumps(list(args), ensure_ascii=False)}"


def _spans(raw: RawInstruction, flags: Flags, sink: Sink) -> dict[str, Location]:
    spans = {f"flag:{name}": where for name, where in flags.where.items()}
    for i, word in enumerate(raw.args):
        spans[f"arg:{i}"] = sink.at(word.line, word.col)
    if raw.args:
        spans["dest"] = spans[f"arg:{len(raw.args) - 1}"]
    return spans


def _heredoc(doc: RawHeredoc, sink: Sink) -> Heredoc:
    content = _LEADING_TABS.sub("", doc.content) if doc.chomp else doc.content
    return Heredoc(
        name=doc.name,
        content=content,
        expand=doc.expand,
        chomp=doc.chomp,
        location=sink.at(doc.line, doc.col),
    )


def _split_names(values: tuple[str, ...]) -> tuple[str, ...]:
    # "--include-weights=a,b" names two tensors; llama-quantize wants one name per flag.
    # A value with a variable is split after expansion, in plan().
    out: list[str] = []
    for value in values:
        out.extend([value] if "$" in value else [v for v in value.split(",") if v])
    return tuple(out)


def _copy_like(
    raw: RawInstruction, keyword: str, sink: Sink
) -> tuple[Flags, dict[str, Location], list[str], str, tuple[Heredoc, ...]] | None:
    """Flags, spans, sources, dest and heredocs shared by ADD, COPY and CAT."""
    flags = parse_flags(keyword, raw.flags, sink)
    spans = _spans(raw, flags, sink)
    if len(raw.args) < 2:
        sink.error(
            f"{keyword} requires at least two arguments: one or more sources and a destination",
            sink.at(raw.line, raw.col),
            "arguments",
        )
        return None
    dest = raw.args[-1]
    if not raw.json and _HEREDOC_WORD.match(dest.text):
        sink.error(
            f"{keyword} cannot accept a heredoc as a destination",
            sink.at(dest.line, dest.col),
            "heredoc-dest",
        )
        return None
    by_index = {doc.arg_index: doc for doc in raw.heredocs}
    sources: list[str] = []
    for i, word in enumerate(raw.args[:-1]):
        if i not in by_index:
            spans[f"source:{len(sources)}"] = sink.at(word.line, word.col)
            sources.append(word.text)
    heredocs = tuple(_heredoc(by_index[i], sink) for i in sorted(by_index))
    return flags, spans, sources, dest.text, heredocs


def _build_add(raw: RawInstruction, sink: Sink) -> Add | None:
    parts = _copy_like(raw, "ADD", sink)
    if parts is None:
        return None
    flags, spans, sources, dest, heredocs = parts
    return Add(
        **_common(raw, sink),  # type: ignore[arg-type]
        spans=spans,
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


def _build_copy(raw: RawInstruction, sink: Sink) -> Copy | None:
    parts = _copy_like(raw, "COPY", sink)
    if parts is None:
        return None
    flags, spans, sources, dest, heredocs = parts
    return Copy(
        **_common(raw, sink),  # type: ignore[arg-type]
        spans=spans,
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


def _build_cat(raw: RawInstruction, sink: Sink) -> Cat | None:
    parts = _copy_like(raw, "CAT", sink)
    if parts is None:
        return None
    _, spans, _, dest, _ = parts
    by_index = {doc.arg_index: doc for doc in raw.heredocs}
    pieces: list[Heredoc] = []
    words: list[Word] = []

    def flush() -> None:
        # Plain words are text to write (the seed's CAT "hi" /path), joined by single spaces.
        if words:
            where = sink.at(words[0].line, words[0].col)
            text = " ".join(w.text for w in words)
            pieces.append(Heredoc(name="", content=text, expand=True, chomp=False, location=where))
            words.clear()

    for i, word in enumerate(raw.args[:-1]):
        if i in by_index:
            flush()
            pieces.append(_heredoc(by_index[i], sink))
        else:
            words.append(word)
    flush()
    return Cat(
        **_common(raw, sink),  # type: ignore[arg-type]
        spans=spans,
        content="".join(p.content for p in pieces),
        dest=dest,
        parts=tuple(pieces),
    )


def _source_dest(
    raw: RawInstruction, keyword: str, spans: dict[str, Location], sink: Sink
) -> tuple[str, str] | None:
    if len(raw.args) < 2:
        sink.error(
            f"{keyword} requires two arguments: a source and a destination",
            sink.at(raw.line, raw.col),
            "arguments",
        )
        return None
    if len(raw.args) > 2:
        extra = raw.args[1]
        sink.error(
            f"{keyword} takes one source only, got {len(raw.args) - 1}",
            sink.at(extra.line, extra.col),
            "arguments",
        )
        return None
    spans["source"] = spans["arg:0"]
    return raw.args[0].text, raw.args[1].text


def _build_convert(raw: RawInstruction, sink: Sink) -> Convert | None:
    flags = parse_flags("CONVERT", raw.flags, sink)
    spans = _spans(raw, flags, sink)
    pair = _source_dest(raw, "CONVERT", spans, sink)
    if pair is None:
        return None
    return Convert(
        **_common(raw, sink),  # type: ignore[arg-type]
        spans=spans,
        from_=flags.get("from"),
        base=flags.get("base"),
        source=pair[0],
        dest=pair[1],
        type=flags.get("type") or DEFAULT_CONVERT_TYPE,
        cls=flags.get("class") or "model",
    )


def _build_quantize(raw: RawInstruction, sink: Sink) -> Quantize | None:
    flags = parse_flags("QUANTIZE", raw.flags, sink)
    spans = _spans(raw, flags, sink)
    pair = _source_dest(raw, "QUANTIZE", spans, sink)
    if pair is None:
        return None
    return Quantize(
        **_common(raw, sink),  # type: ignore[arg-type]
        spans=spans,
        from_=flags.get("from"),
        imatrix=flags.get("imatrix"),
        include_weights=_split_names(flags.many("include-weights")),
        exclude_weights=_split_names(flags.many("exclude-weights")),
        pure=flags.flag("pure"),
        leave_output_tensor=flags.flag("leave-output-tensor"),
        allow_requantize=flags.flag("allow-requantize"),
        output_tensor_type=flags.get("output-tensor-type"),
        token_embedding_type=flags.get("token-embedding-type"),
        source=pair[0],
        dest=pair[1],
        type=flags.get("type") or DEFAULT_QUANTIZE_TYPE,
    )


def _build_cmd(raw: RawInstruction, sink: Sink) -> Cmd | None:
    flags = parse_flags("CMD", raw.flags, sink)
    where = sink.at(raw.line, raw.col)
    if not raw.args:
        sink.error(
            'CMD: no arguments provided: write CMD ["-m", "model.gguf", ...]',
            where,
            "cmd-json",
        )
        return None
    if not raw.json:
        sink.error(
            'CMD must use the JSON (exec) form: CMD ["-m", "model.gguf", ...]',
            sink.at(raw.args_line, raw.args_col),
            "cmd-json",
        )
        return None
    args = tuple(w.text for w in raw.args)
    common = _common(raw, sink) | {"created_by": cmd_history(raw.keyword, args)}
    return Cmd(**common, spans=_spans(raw, flags, sink), args=args)  # type: ignore[arg-type]


def _build_label(raw: RawInstruction, sink: Sink) -> Label | None:
    parse_flags("LABEL", raw.flags, sink)
    where = sink.at(raw.line, raw.col)
    if not raw.args:
        sink.error("LABEL requires at least one key=value pair", where, "arguments")
        return None
    spans: dict[str, Location] = {}
    items: list[tuple[str, str]] = []
    first = raw.args[0]
    if "=" not in first.text:
        if len(raw.args) < 2:
            sink.error(
                f"LABEL needs a value for {first.text!r}: LABEL key=value", where, "label-syntax"
            )
            return None
        sink.warn(
            '"LABEL key=value" should be used instead of the legacy "LABEL key value" format',
            where,
            "label-legacy",
        )
        spans["key:0"] = sink.at(first.line, first.col)
        items.append((first.text, raw.args_text[len(first.text) :].strip()))
    else:
        for word in raw.args:
            key, sep, value = word.text.partition("=")
            if not sep:
                sink.error(
                    f"LABEL needs key=value pairs: can't find '=' in {word.text!r}",
                    sink.at(word.line, word.col),
                    "label-syntax",
                )
                return None
            if not key:
                sink.error(
                    "LABEL names can not be blank", sink.at(word.line, word.col), "label-syntax"
                )
                return None
            spans[f"key:{len(items)}"] = sink.at(word.line, word.col)
            items.append((key, value))
    return Label(**_common(raw, sink), spans=spans, items=tuple(items))  # type: ignore[arg-type]


def _build_args(raw: RawInstruction, sink: Sink) -> list[Arg]:
    parse_flags("ARG", raw.flags, sink)
    if not raw.args:
        sink.error(
            "ARG requires at least one argument: ARG NAME[=default]",
            sink.at(raw.line, raw.col),
            "arguments",
        )
        return []
    out: list[Arg] = []
    for word in raw.args:
        where = sink.at(word.line, word.col)
        name, sep, default = word.text.partition("=")
        if not name:
            sink.error("ARG names can not be blank", where, "arguments")
            continue
        out.append(
            Arg(
                location=where,
                keyword=raw.keyword,
                original=raw.text,
                created_by=f"{raw.keyword} {word.text}",
                spans={"name": where},
                name=name,
                default=default if sep else None,
            )
        )
    return out


def _build_from(raw: RawInstruction, sink: Sink) -> From:
    flags = parse_flags("FROM", raw.flags, sink)
    where = sink.at(raw.line, raw.col)
    spans = _spans(raw, flags, sink)
    args = raw.args
    name: str | None = None
    if len(args) == 3 and args[1].text.lower() == "as":
        written = args[2].text
        name_at = sink.at(args[2].line, args[2].col)
        spans["name"] = name_at
        lowered = written.lower()
        if not _STAGE_NAME.match(lowered):
            sink.error(
                f"invalid name for build stage: {written!r}, name can't start with a number "
                "or contain symbols (it must match ^[a-z][a-z0-9-_.]*$)",
                name_at,
                "stage-name",
            )
        elif lowered in RESERVED_STAGE_NAMES:
            sink.error(
                f"stage name {written!r} is reserved: {lowered} already means something in "
                "FROM and --from",
                name_at,
                "stage-name",
            )
        else:
            name = lowered
            if written != lowered:
                sink.warn(f"stage name {written!r} should be lowercase", name_at, "stage-name-case")
    elif len(args) != 1:
        sink.error(
            "FROM requires either one or three arguments: FROM IMAGE [AS NAME]",
            where,
            "from-args",
        )
    if args:
        spans["image"] = spans["arg:0"]
    return From(
        **_common(raw, sink),  # type: ignore[arg-type]
        spans=spans,
        image=args[0].text if args else "",
        name=name,
        platform=flags.get("platform"),
    )


def build(raw: RawInstruction, sink: Sink) -> list[Instruction | From]:
    """The records for one raw instruction: none when it is unusable, several for ARG."""
    keyword = raw.keyword.upper()
    record: Instruction | From | None
    if keyword == "ARG":
        return list(_build_args(raw, sink))
    if keyword == "FROM":
        record = _build_from(raw, sink)
    elif keyword == "ADD":
        record = _build_add(raw, sink)
    elif keyword == "COPY":
        record = _build_copy(raw, sink)
    elif keyword == "CAT":
        record = _build_cat(raw, sink)
    elif keyword == "CONVERT":
        record = _build_convert(raw, sink)
    elif keyword == "QUANTIZE":
        record = _build_quantize(raw, sink)
    elif keyword == "CMD":
        record = _build_cmd(raw, sink)
    elif keyword == "LABEL":
        record = _build_label(raw, sink)
    else:
        close = difflib.get_close_matches(keyword, INSTRUCTIONS, n=1, cutoff=0.6)
        hint = (
            f"did you mean {close[0]}?"
            if close
            else "a Packerfile knows " + ", ".join(INSTRUCTIONS)
        )
        sink.error(
            f"unknown instruction: {raw.keyword} ({hint})",
            sink.at(raw.line, raw.col),
            "unknown-instruction",
        )
        return []
    return [] if record is None else [record]
