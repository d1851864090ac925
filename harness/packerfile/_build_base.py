"""What every record builder shares: the common record fields, argument spans, CMD history.

Apart so that the per-instruction builders (_build_files, _build_model, _instructions) and the
planner, which rewrites CMD's history after expansion, use one definition of each.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from harness.errors import Location
from harness.packerfile._flags import Flags
from harness.packerfile._problems import Sink
from harness.packerfile._raw import RawInstruction
from harness.packerfile._words import squeeze

__all__ = ["arg_spans", "cmd_history", "common_fields"]


def common_fields(raw: RawInstruction, sink: Sink) -> dict[str, object]:
    """The fields every record has: where it is, its keyword, the text and its history entry."""
    return {
        "location": sink.at(raw.line, raw.col),
        "keyword": raw.keyword,
        "original": raw.text,
        "created_by": squeeze(raw.text, sink.escape),
    }


def cmd_history(keyword: str, args: Sequence[str]) -> str:
    """CMD's history entry: the keyword as written, then its arguments as one JSON array."""
    return f"{keyword} {json.dumps(list(args), ensure_ascii=False)}"


def arg_spans(raw: RawInstruction, flags: Flags, sink: Sink) -> dict[str, Location]:
    """Where each flag and argument was written; the last argument is also ``dest``."""
    out = {f"flag:{name}": where for name, where in flags.where.items()}
    for i, word in enumerate(raw.args):
        out[f"arg:{i}"] = sink.at(word.line, word.col)
    if raw.args:
        out["dest"] = out[f"arg:{len(raw.args) - 1}"]
    return out
