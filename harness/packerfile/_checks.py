"""The checks on an instruction's values.

With ``final=False`` (parse time) only values written literally are judged, since ``${TYPE}``
is unknown until plan(); with ``final=True`` (plan time, values expanded) every value is.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from harness.packerfile._expand import ExpandError, expand_word
from harness.packerfile._problems import Sink
from harness.packerfile._records import Add, Cmd, Convert, Copy, From, Instruction, Quantize
from harness.packerfile._roles import scan_cmd
from harness.packerfile._sources import is_git_source, is_http_source
from harness.packerfile._types import (
    CONVERT_CLASSES,
    CONVERT_TYPES,
    GGML_TYPES,
    QUANTIZE_TYPES,
    needs_imatrix,
)

__all__ = ["check", "check_model", "literal", "suggest"]

_CHECKSUM = re.compile(r"^(?:sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})$")


def suggest(value: str, choices: Sequence[str]) -> str:
    """`` (did you mean X?)`` for the closest choice, or an empty string."""
    if value.upper() in choices:
        return f" (did you mean {value.upper()}?)"
    close = difflib.get_close_matches(value.upper(), list(choices), n=1, cutoff=0.6)
    if not close:
        close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def literal(text: str | None, final: bool) -> str | None:
    """The value of ``text`` if it can be known now: always once final, else only when it
    uses no variable (quotes are still removed)."""
    if text is None:
        return None
    if final:
        return text
    if "$" in text:
        return None
    try:
        return expand_word(text, {}).value
    except ExpandError:
        return None


def _check_type(
    record: Convert | Quantize, choices: Sequence[str], sink: Sink, final: bool
) -> str | None:
    value = literal(record.type, final)
    where = record.where("flag:type")
    if value is None:
        return None
    keyword = record.keyword.upper()
    if not value:
        sink.error(f"{keyword}: --type needs a value", where, f"{keyword.lower()}-type")
        return None
    if value not in choices:
        sink.error(
            f"invalid --type {value!r} for {keyword}{suggest(value, choices)}; "
            f"choose one of {', '.join(choices)}",
            where,
            f"{keyword.lower()}-type",
        )
        return None
    return value


def _check_add(add: Add, sink: Sink, final: bool) -> None:
    if not add.checksum:
        return
    where = add.where("flag:checksum")
    if len(add.sources) != 1 or add.heredocs:
        sink.error(
            "--checksum can't be specified for multiple sources: it needs exactly one "
            "HTTP(S) source",
            where,
            "checksum",
        )
    else:
        source = literal(add.sources[0], final)
        if source is not None and not is_http_source(source):
            sink.error(
                f"--checksum can't be specified for non-HTTP(S) sources: {source!r}",
                where,
                "checksum",
            )
    checksum = literal(add.checksum, final)
    if checksum is not None and not _CHECKSUM.match(checksum):
        sink.error(
            f"invalid --checksum {checksum!r}: expected sha256:<64 hex digits>, "
            "sha384:<96 hex digits> or sha512:<128 hex digits>",
            where,
            "checksum",
        )


def _check_copy(copy: Copy, sink: Sink, final: bool) -> None:
    for i, text in enumerate(copy.sources):
        source = literal(text, final)
        if source is None:
            continue
        where = copy.where(f"source:{i}")
        if is_git_source(source):
            sink.error(
                f"COPY can't clone a Git repository ({source}): use ADD", where, "copy-source"
            )
        elif source.startswith(("http://", "https://")):
            sink.error(f"COPY can't download a URL ({source}): use ADD", where, "copy-source")


def _check_convert(convert: Convert, sink: Sink, final: bool) -> None:
    _check_type(convert, CONVERT_TYPES, sink, final)
    cls = literal(convert.cls, final)
    if cls is not None and cls not in CONVERT_CLASSES:
        sink.error(
            f"invalid --class {cls!r} for CONVERT: choose model or lora",
            convert.where("flag:class"),
            "convert-class",
        )
    base = literal(convert.base, final) if convert.base is not None else ""
    if cls == "lora" and base == "":
        sink.error(
            "CONVERT --class=lora needs --base=<path of the base model's directory>",
            convert.where("flag:class"),
            "convert-base",
        )
    elif cls == "model" and base:
        sink.warn(
            "--base is only used with --class=lora", convert.where("flag:base"), "convert-base"
        )


def _check_quantize(quantize: Quantize, sink: Sink, final: bool) -> None:
    type_ = _check_type(quantize, QUANTIZE_TYPES, sink, final)
    imatrix = quantize.imatrix or None
    if type_ is not None and needs_imatrix(type_) and imatrix is None:
        sink.error(
            f"QUANTIZE --type={type_} needs --imatrix=<file>: llama.cpp refuses to quantize to "
            f"{type_} without an importance matrix",
            quantize.where("flag:type"),
            "quantize-imatrix",
        )
    for flag, text in (
        ("output-tensor-type", quantize.output_tensor_type),
        ("token-embedding-type", quantize.token_embedding_type),
    ):
        value = literal(text, final)
        if value and value not in GGML_TYPES:
            sink.error(
                f"invalid --{flag} {value!r}{suggest(value, GGML_TYPES)}",
                quantize.where(f"flag:{flag}"),
                "tensor-type",
            )
    if quantize.include_weights and quantize.exclude_weights:
        later = max(
            quantize.where("flag:include-weights"),
            quantize.where("flag:exclude-weights"),
            key=lambda loc: (loc.line or 0, loc.col or 0),
        )
        sink.error(
            "QUANTIZE takes --include-weights or --exclude-weights, not both",
            later,
            "quantize-weights",
        )
    elif (quantize.include_weights or quantize.exclude_weights) and imatrix is None:
        flag = "include-weights" if quantize.include_weights else "exclude-weights"
        sink.warn(
            f"--{flag} only matters with --imatrix",
            quantize.where(f"flag:{flag}"),
            "quantize-weights",
        )


def _check_cmd(cmd: Cmd, sink: Sink, final: bool) -> None:
    # CMD strings are not shell words: judge the first one as written, once it is known.
    first = cmd.args[0]
    if final or "$" not in first:
        if not first:
            sink.error("CMD: illegal first argument: blank", cmd.where("arg:0"), "cmd-first-arg")
        elif not first.startswith("-"):
            sink.error(
                f"CMD: illegal first argument {first!r}: it must start with '-' "
                "(CMD holds llama-server arguments, not a program)",
                cmd.where("arg:0"),
                "cmd-first-arg",
            )
        elif final or not any("$" in arg for arg in cmd.args):
            # read as llama-server reads it, once no variable can still change a flag's name
            _, _, problems = scan_cmd(cmd.args)
            for index, message in problems:
                sink.error(message, cmd.where(f"arg:{index}"), "cmd-value")


def check_model(cmd: Cmd, sink: Sink) -> None:
    """The CMD that takes effect must name the main model (``-m``/``--model``)."""
    if not cmd.args[0].startswith("-") or scan_cmd(cmd.args)[2]:
        return  # a CMD llama-server would refuse: _check_cmd has said why
    if cmd.model is None:
        sink.error(
            'command must point out the main model: add "-m", "<file>.gguf" to CMD',
            cmd.location,
            "cmd-model",
        )


def check(record: Instruction | From, sink: Sink, *, final: bool) -> None:
    """Report what is wrong with a record's values (see the module doc for ``final``)."""
    if isinstance(record, Add):
        _check_add(record, sink, final)
    elif isinstance(record, Copy):
        _check_copy(record, sink, final)
    elif isinstance(record, Convert):
        _check_convert(record, sink, final)
    elif isinstance(record, Quantize):
        _check_quantize(record, sink, final)
    elif isinstance(record, Cmd):
        _check_cmd(record, sink, final)
