"""Builder flags (``--name[=value]``): which ones each instruction takes, and their values.

Like BuildKit's BFlags: a string flag needs ``=value``, a boolean one takes ``true``/``false``
or no value, a repeatable one (``--exclude``) collects every occurrence.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field

from harness.errors import Location
from harness.packerfile._problems import Sink
from harness.packerfile._raw import RawFlag

__all__ = ["FLAG_SPECS", "Flags", "parse_flags"]

_STR, _BOOL, _MULTI = "string", "bool", "strings"
# Flags whose empty value can only be a mistake (an empty --from or --imatrix means "none").
_NON_EMPTY = frozenset({"type", "class"})
FLAG_SPECS: dict[str, dict[str, str]] = {
    "ADD": {
        "checksum": _STR,
        "keep-git-dir": _BOOL,
        "chown": _STR,
        "chmod": _STR,
        "link": _BOOL,
        "exclude": _MULTI,
    },
    "COPY": {
        "from": _STR,
        "parents": _BOOL,
        "exclude": _MULTI,
        "chown": _STR,
        "chmod": _STR,
        "link": _BOOL,
    },
    "CONVERT": {"from": _STR, "type": _STR, "class": _STR, "base": _STR},
    "QUANTIZE": {
        "from": _STR,
        "type": _STR,
        "imatrix": _STR,
        "include-weights": _MULTI,
        "exclude-weights": _MULTI,
        "pure": _BOOL,
        "leave-output-tensor": _BOOL,
        "allow-requantize": _BOOL,
        "output-tensor-type": _STR,
        "token-embedding-type": _STR,
    },
    "FROM": {"platform": _STR},
}


@dataclass
class Flags:
    values: dict[str, str] = field(default_factory=dict)
    bools: dict[str, bool] = field(default_factory=dict)
    multi: dict[str, list[str]] = field(default_factory=dict)
    where: dict[str, Location] = field(default_factory=dict)

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def flag(self, name: str) -> bool:
        return self.bools.get(name, False)

    def many(self, name: str) -> tuple[str, ...]:
        return tuple(self.multi.get(name, ()))


def parse_flags(keyword: str, flags: Sequence[RawFlag], sink: Sink) -> Flags:
    spec = FLAG_SPECS.get(keyword, {})
    out = Flags()
    for flag in flags:
        where = sink.at(flag.line, flag.col)
        kind = spec.get(flag.name)
        if kind is None:
            _unknown_flag(keyword, flag.name, spec, where, sink)
            continue
        if flag.name in out.where and kind != _MULTI:
            sink.error(f"duplicate flag --{flag.name}", where, "flag-duplicate")
            continue
        out.where.setdefault(flag.name, where)
        if kind == _BOOL:
            value = "true" if flag.value is None else flag.value.lower()
            if value not in ("true", "false"):
                shown = repr(flag.value) if flag.value else "nothing"
                sink.error(
                    f"flag --{flag.name} expects true or false, not {shown}", where, "flag-value"
                )
                continue
            out.bools[flag.name] = value == "true"
        elif flag.value is None:
            sink.error(
                f"flag --{flag.name} needs a value: --{flag.name}=VALUE", where, "flag-value"
            )
        elif kind == _STR:
            if not flag.value and flag.name in _NON_EMPTY:
                sink.error(
                    f"flag --{flag.name} needs a value: --{flag.name}=VALUE", where, "flag-value"
                )
                continue
            out.values[flag.name] = flag.value
        else:
            out.multi.setdefault(flag.name, []).append(flag.value)
    return out


def _unknown_flag(
    keyword: str, name: str, spec: dict[str, str], where: Location, sink: Sink
) -> None:
    if keyword == "COPY" and name == "checksum":
        sink.error(
            "--checksum can't be specified for COPY: only ADD verifies a checksum, "
            "of an HTTP(S) source",
            where,
            "checksum",
        )
        return
    if not spec:
        sink.error(f"unknown flag --{name}: {keyword} takes no flags", where, "unknown-flag")
        return
    close = difflib.get_close_matches(name, list(spec), n=1, cutoff=0.6)
    hint = (
        f"did you mean --{close[0]}?"
        if close
        else f"{keyword} takes " + ", ".join(f"--{n}" for n in spec)
    )
    sink.error(f"unknown flag --{name} for {keyword} ({hint})", where, "unknown-flag")
