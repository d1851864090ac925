"""CONVERT and QUANTIZE records: one model file in, one out, and the llama.cpp options.

The two are the Packerfile's own instructions (no Dockerfile has them) and share their
argument shape, exactly one source and one destination.
"""

from __future__ import annotations

from harness.errors import Location
from harness.packerfile._build_base import arg_spans, common_fields
from harness.packerfile._flags import parse_flags
from harness.packerfile._problems import Sink
from harness.packerfile._raw import RawInstruction
from harness.packerfile._records import Convert, Quantize
from harness.packerfile._types import DEFAULT_CONVERT_TYPE, DEFAULT_QUANTIZE_TYPE

__all__ = ["build_convert", "build_quantize"]


def _split_names(values: tuple[str, ...]) -> tuple[str, ...]:
    # "--include-weights=a,b" names two tensors; llama-quantize wants one name per flag.
    # A value with a variable is split after expansion, in plan().
    out: list[str] = []
    for value in values:
        out.extend([value] if "$" in value else [v for v in value.split(",") if v])
    return tuple(out)


def _source_dest(
    raw: RawInstruction, keyword: str, where: dict[str, Location], sink: Sink
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
    where["source"] = where["arg:0"]
    return raw.args[0].text, raw.args[1].text


def build_convert(raw: RawInstruction, sink: Sink) -> Convert | None:
    flags = parse_flags("CONVERT", raw.flags, sink)
    where = arg_spans(raw, flags, sink)
    pair = _source_dest(raw, "CONVERT", where, sink)
    if pair is None:
        return None
    return Convert(
        **common_fields(raw, sink),  # type: ignore[arg-type]
        spans=where,
        from_=flags.get("from"),
        base=flags.get("base"),
        source=pair[0],
        dest=pair[1],
        type=flags.get("type") or DEFAULT_CONVERT_TYPE,
        cls=flags.get("class") or "model",
    )


def build_quantize(raw: RawInstruction, sink: Sink) -> Quantize | None:
    flags = parse_flags("QUANTIZE", raw.flags, sink)
    where = arg_spans(raw, flags, sink)
    pair = _source_dest(raw, "QUANTIZE", where, sink)
    if pair is None:
        return None
    return Quantize(
        **common_fields(raw, sink),  # type: ignore[arg-type]
        spans=where,
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
