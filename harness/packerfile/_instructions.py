"""Raw instructions to typed records: flags, arity and argument forms of the nine.

Records hold the text as written; values are judged in _checks and expanded in _plan. The
file instructions (ADD, COPY, CAT) are built in _build_files, the model ones (CONVERT,
QUANTIZE) in _build_model; FROM, ARG, LABEL and CMD, each one of a kind, are built here.
"""

from __future__ import annotations

import difflib
import re

from harness.errors import Location
from harness.packerfile._build_base import arg_spans, cmd_history, common_fields
from harness.packerfile._build_files import build_add, build_cat, build_copy
from harness.packerfile._build_model import build_convert, build_quantize
from harness.packerfile._flags import parse_flags
from harness.packerfile._problems import Sink
from harness.packerfile._raw import RawInstruction
from harness.packerfile._records import Arg, Cmd, From, Instruction, Label

__all__ = ["INSTRUCTIONS", "RESERVED_STAGE_NAMES", "build"]

INSTRUCTIONS = ("ADD", "ARG", "CAT", "CMD", "COPY", "CONVERT", "FROM", "LABEL", "QUANTIZE")
RESERVED_STAGE_NAMES = ("scratch", "context")
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9-_.]*$")


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
    fields = common_fields(raw, sink) | {"created_by": cmd_history(raw.keyword, args)}
    return Cmd(**fields, spans=arg_spans(raw, flags, sink), args=args)  # type: ignore[arg-type]


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
    return Label(**common_fields(raw, sink), spans=spans, items=tuple(items))  # type: ignore[arg-type]


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
    spans = arg_spans(raw, flags, sink)
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
        **common_fields(raw, sink),  # type: ignore[arg-type]
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
        record = build_add(raw, sink)
    elif keyword == "COPY":
        record = build_copy(raw, sink)
    elif keyword == "CAT":
        record = build_cat(raw, sink)
    elif keyword == "CONVERT":
        record = build_convert(raw, sink)
    elif keyword == "QUANTIZE":
        record = build_quantize(raw, sink)
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
