"""Problems the schema cannot express: units, regexes, cross-references, consistent counts.

Runs on data that may have failed the schema, so every step checks the shape it relies on and
skips values the schema already reported.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any

from harness.errors import Location, SpecError
from harness.quality import METRICS
from harness.toolchain import ServerArgsError, parse_server_args
from harness.units import UnitError, parse_percent, parse_size

from ._expectations import parse_expectation, parse_matcher
from ._schema import dotted as _label
from ._schema import show
from ._yaml import DataPath, Located

__all__ = ["inner_locations", "semantic_problems"]

_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
_ARG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
# distribution/reference's grammar, simplified: [host[:port]/]path[:tag]
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(
    rf"(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?"
)
_INPUTS = {
    "chat": ("messages", "prompt", "system", "max_tokens", "temperature", "seed"),
    "completion": ("prompt", "max_tokens", "temperature", "seed"),
    "embedding": ("input",),
}
_ALL_INPUTS = ("messages", "prompt", "system", "input", "max_tokens", "temperature", "seed")


def inner_locations(doc: Located, path: DataPath, raw: Any) -> dict[str, Location]:
    """The value locations of a mapping's own keys, for problems inside it."""
    if not isinstance(raw, dict):
        return {}
    return {str(key): doc.value_location((*path, key)) for key in raw}


def semantic_problems(doc: Located, faulty: set[DataPath]) -> list[SpecError]:
    """Problems beyond the schema; values under a path in ``faulty`` are skipped."""
    return _Semantic(doc, faulty).run()


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


class _Semantic:
    def __init__(self, doc: Located, faulty: set[DataPath]) -> None:
        self._doc = doc
        self._faulty = faulty
        self._problems: list[SpecError] = []

    def run(self) -> list[SpecError]:
        root = _dict(self._doc.data)
        self._expect(_dict(root.get("expect")))
        self._source(_dict(root.get("source")), _dict(_dict(root.get("build")).get("contexts")))
        self._unique(("build", "variants"))
        self._memory(_dict(root.get("memory")))
        self._smoke(_dict(root.get("smoke")))
        self._publish(_dict(root.get("publish")), _dict(root.get("build")))
        self._quality(_dict(root.get("quality")), _dict(root.get("build")))
        return self._problems

    def _clean(self, path: DataPath) -> bool:
        return not any(fault[: len(path)] == path for fault in self._faulty)

    def _value(self, path: DataPath) -> Location:
        return self._doc.value_location(path)

    def _key(self, path: DataPath) -> Location:
        return self._doc.key_location(path)

    def _problem(self, message: str, location: Location) -> None:
        self._problems.append(SpecError(message, location))

    def _expect(self, expect: dict[str, Any]) -> None:
        for key, raw in expect.items():
            entries: Iterable[tuple[DataPath, Any, bool]]
            if key in ("metadata", "labels"):
                entries = [
                    (("expect", key, name), value, True) for name, value in _dict(raw).items()
                ]
            else:
                entries = [(("expect", key), raw, False)]
            for path, value, is_matcher in entries:
                if not self._clean(path) or self._bad_regexes(path, value):
                    continue
                inner = inner_locations(self._doc, path, value)
                try:
                    if is_matcher:
                        parse_matcher(value, self._value(path), inner)
                    else:
                        parse_expectation(key, value, self._value(path), inner)
                except SpecError as error:
                    self._problem(
                        f"{_label(path)}: {error.message}", error.location or self._value(path)
                    )

    def _bad_regexes(self, path: DataPath, matcher: Any) -> bool:
        """Report the regexes of a matcher that do not compile; whether there were any (the
        matcher's own parser knows only re.error)."""
        bad = False
        for name in ("regex", "not_regex"):
            pattern = _dict(matcher).get(name)
            problem = _regex_problem(pattern) if isinstance(pattern, str) else None
            if problem is not None:
                self._problem(f"{_label(path)}: {problem}", self._value((*path, name)))
                bad = True
        return bad

    def _source(self, source: dict[str, Any], contexts: dict[str, Any]) -> None:
        if not self._clean(("source",)):
            return
        image = source.get("image")
        is_registry = isinstance(image, str) and not image.startswith("oci:")
        if "from" in source:
            where = self._value(("source", "from"))
            if is_registry:
                self._problem(
                    "source.from applies to gguf files and oci: layouts, not registry references",
                    where,
                )
            elif source["from"] not in contexts:
                self._problem(
                    f"source.from: no build context named {show(source['from'])}"
                    + _choices(source["from"], list(contexts)),
                    where,
                )
        if isinstance(image, str) and image.startswith("oci:") and not image[4:].split(":")[0]:
            self._problem(
                "source.image: 'oci:' needs a layout directory, like oci:out/model:latest",
                self._value(("source", "image")),
            )
        elif is_registry and isinstance(image, str) and not _REFERENCE.fullmatch(image):
            self._problem(
                f"source.image: {show(image)} is not a registry reference like"
                " 127.0.0.1:5000/model:tag (write oci:DIR for an OCI layout)",
                self._value(("source", "image")),
            )

    def _unique(self, path: DataPath) -> None:
        seen: dict[str, int] = {}
        items = self._doc.data
        for part in path:
            items = _dict(items).get(str(part))
        for index, item in enumerate(_list(items)):
            name = _dict(item).get("name")
            if not isinstance(name, str):
                continue
            if name in seen:
                first = _label((*path, seen[name]))
                self._problem(
                    f"{_label((*path, index, 'name'))}: {show(name)} is already the name of"
                    f" {first}",
                    self._value((*path, index, "name")),
                )
            seen.setdefault(name, index)

    def _size(self, path: DataPath, raw: Any) -> int | None:
        if raw is None or not self._clean(path):
            return None
        try:
            return parse_size(raw)
        except UnitError as error:
            self._problem(f"{_label(path)}: {error.message}", self._value(path))
            return None

    def _server_args(self, path: DataPath, argv: Any) -> None:
        """A list of llama-server arguments: what llama-server would refuse, at its item."""
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            return  # the schema says what is wrong
        if not self._clean(path):
            return
        try:
            parse_server_args(argv)
        except ServerArgsError as error:
            where = (*path, max(error.index, 0)) if argv else path
            self._problem(f"{_label(path)}: {error}", self._value(where))

    def _memory(self, memory: dict[str, Any]) -> None:
        self._server_args(("memory", "server_args"), memory.get("server_args"))
        self._size(("memory", "ram"), memory.get("ram"))
        batch, ubatch = memory.get("batch_size"), memory.get("ubatch_size")
        if isinstance(batch, int) and isinstance(ubatch, int) and ubatch > batch:
            self._problem(
                f"memory.ubatch_size: {ubatch} is larger than batch_size {batch}",
                self._value(("memory", "ubatch_size")),
            )
        self._unique(("memory", "budgets"))
        for index, budget in enumerate(_list(memory.get("budgets"))):
            self._budget(("memory", "budgets", index), _dict(budget))

    def _budget(self, path: DataPath, budget: dict[str, Any]) -> None:
        vram = self._size((*path, "vram"), budget.get("vram"))
        self._size((*path, "ram"), budget.get("ram"))
        headroom = budget.get("headroom")
        where = (*path, "headroom")
        if isinstance(headroom, str) and headroom.strip().endswith("%") and self._clean(where):
            if parse_percent(headroom) >= 1:
                self._problem(
                    f"{_label(where)}: {_plain(headroom)} leaves no memory to use",
                    self._value(where),
                )
        elif (
            (size := self._size(where, headroom)) is not None and vram is not None and size >= vram
        ):
            self._problem(
                f"{_label(where)}: {_plain(str(headroom))} is not less than vram",
                self._value(where),
            )
        split, count = budget.get("tensor_split"), budget.get("count", 1)
        if isinstance(split, list) and isinstance(count, int) and len(split) != count:
            self._problem(
                f"{_label((*path, 'tensor_split'))}: {len(split)} shares for {count} GPU"
                f"{'s' if count != 1 else ''} (count)",
                self._key((*path, "tensor_split")),
            )

    def _smoke(self, smoke: dict[str, Any]) -> None:
        self._server_args(("smoke", "server_args"), smoke.get("server_args"))
        self._unique(("smoke", "checks"))
        for index, check in enumerate(_list(smoke.get("checks"))):
            self._smoke_check(("smoke", "checks", index), _dict(check))

    def _smoke_check(self, path: DataPath, check: dict[str, Any]) -> None:
        kind = check.get("kind", "chat")
        if not isinstance(kind, str):
            return  # the schema says what kind may be
        allowed = _INPUTS.get(kind, _ALL_INPUTS)
        for key in _ALL_INPUTS:
            if key in check and key not in allowed:
                self._problem(
                    f"{_label(path)}: {key!r} is not used by a {kind} check",
                    self._key((*path, key)),
                )
        if kind == "chat" and "messages" in check and "prompt" in check:
            self._problem(
                f"{_label(path)}: use either 'messages' or 'prompt'", self._key((*path, "prompt"))
            )
        expect = _dict(check.get("expect"))
        for name in ("regex", "not_regex"):
            where = (*path, "expect", name)
            problem = _regex_problem(expect[name]) if isinstance(expect.get(name), str) else None
            if problem is not None and self._clean(where):
                self._problem(f"{_label(where)}: {problem}", self._value(where))
        low, high = expect.get("min_tokens"), expect.get("max_tokens")
        if isinstance(low, int) and isinstance(high, int) and low > high:
            self._problem(
                f"{_label((*path, 'expect'))}: min_tokens {low} is greater than max_tokens {high}",
                self._value((*path, "expect", "max_tokens")),
            )
        for index, pair in enumerate(_list(expect.get("similar"))):
            low, high = _dict(pair).get("min"), _dict(pair).get("max")
            if isinstance(low, (int, float)) and isinstance(high, (int, float)) and low > high:
                where = (*path, "expect", "similar", index, "max")
                self._problem(
                    f"{_label(where)}: min {low} is greater than max {high}", self._value(where)
                )

    def _publish(self, publish: dict[str, Any], build: dict[str, Any]) -> None:
        args = set(_dict(build.get("args")))
        for variant in _list(build.get("variants")):
            args.update(_dict(_dict(variant).get("args")))
        for index, tag in enumerate(_list(publish.get("tags"))):
            where = ("publish", "tags", index)
            if not isinstance(tag, str) or not self._clean(where):
                continue
            for name in _PLACEHOLDER.findall(tag):
                if not _ARG_NAME.fullmatch(name):
                    self._problem(
                        f"publish.tags[{index}]: {show('${' + name + '}')} is not a build arg name",
                        self._value(where),
                    )
                elif name not in args:
                    self._problem(
                        f"publish.tags[{index}]: no build arg {show(name)}"
                        + _choices(name, sorted(args)),
                        self._value(where),
                    )
            literal = _PLACEHOLDER.sub("x", tag)
            if not _TAG.fullmatch(literal):
                self._problem(
                    f"publish.tags[{index}]: {show(tag)} is not a valid tag"
                    " (at most 128 letters, digits, '_', '.', '-')",
                    self._value(where),
                )
        for index, reference in enumerate(_list(publish.get("references"))):
            where = ("publish", "references", index)
            if (
                isinstance(reference, str)
                and self._clean(where)
                and not _REFERENCE.fullmatch(reference)
            ):
                self._problem(
                    f"publish.references[{index}]: {show(reference)} is not a registry reference"
                    " like 127.0.0.1:5000/smollm2 (lowercase repository)",
                    self._value(where),
                )

    def _quality(self, quality: dict[str, Any], build: dict[str, Any]) -> None:
        if not quality or not self._clean(("quality",)):
            return
        kind = quality.get("kind", "perplexity")
        declared = _dict(quality.get("thresholds"))
        names = [str(_dict(v).get("name")) for v in _list(build.get("variants"))]
        tables: list[tuple[DataPath, dict[str, Any]]] = [(("quality", "thresholds"), declared)]
        for name, entry in _dict(quality.get("variants")).items():
            if name not in names:
                self._problem(
                    f"quality.variants.{name}: no build variant of that name"
                    f" (build.variants: {', '.join(names) or 'none'})",
                    self._key(("quality", "variants", name)),
                )
            own = _dict(_dict(entry).get("thresholds"))
            path: DataPath = ("quality", "variants", name, "thresholds")
            tables.append((path, own))
            for metric in own:
                if metric not in declared:
                    self._problem(
                        f"{_label((*path, metric))}: not in quality.thresholds; declare it there"
                        " (every variant is tested on the same metrics)",
                        self._key((*path, metric)),
                    )
        for path, table in tables:
            for metric in table:
                own_kind = METRICS[metric].kind if metric in METRICS else kind
                if own_kind != kind:
                    article = "an" if own_kind == "embedding" else "a"
                    self._problem(
                        f"{_label((*path, metric))}: {article} {own_kind} metric, but"
                        f" quality.kind is {kind}",
                        self._key((*path, metric)),
                    )


def _plain(written: str) -> str:
    """A size or percentage as written, on one line: the schema's patterns allow whitespace
    (newlines too) around the number and the unit."""
    text = " ".join(written.split())
    return text if len(text) <= 60 else text[:60] + "..."


def _regex_problem(pattern: str) -> str | None:
    """Why Python cannot compile ``pattern``. Not only re.error: a repeat count past 2**32 is an
    OverflowError, groups nested a few hundred deep a RecursionError."""
    try:
        re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as error:
        return f"invalid regular expression {show(pattern)}: {error}"
    return None


def _choices(word: str, names: list[str]) -> str:
    close = difflib.get_close_matches(word, names, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (defined: {', '.join(repr(name) for name in names)})" if names else " (none defined)"
