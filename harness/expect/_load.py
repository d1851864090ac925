"""model.yaml -> ModelSpec: located YAML, schema, semantic checks, then records."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, cast

from harness.errors import Location, SpecError, SpecErrors

from ._expectations import parse_expectation, parse_matcher
from ._quality import quality_section
from ._records import BuildSpec, Check, Context, ModelSpec, SourceSpec, Variant
from ._schema import schema_problems
from ._sections import memory_section, publish_section, smoke_section
from ._semantic import inner_locations, semantic_problems
from ._yaml import DataPath, Located, load_located

ContextKind = Literal["path", "package", "env"]

__all__ = ["load_spec", "validate"]


def validate(path: str | Path) -> list[SpecError]:
    """Every problem in the model.yaml at ``path``, in file order; empty when it is valid."""
    try:
        doc = load_located(path)
    except SpecError as error:
        return [error]
    return _problems(doc)


def load_spec(path: str | Path) -> ModelSpec:
    """Read and check a model.yaml; raises SpecErrors (a SpecError) listing every problem."""
    try:
        doc = load_located(path)
    except SpecError as error:
        raise SpecErrors([error]) from None
    problems = _problems(doc)
    if problems:
        raise SpecErrors(problems)
    return _build(doc, Path(path))


def _problems(doc: Located) -> list[SpecError]:
    problems, faulty = schema_problems(doc)
    reported = {problem.location for problem in problems}
    # The schema already flagged most bad values; a second sentence on the same spot is noise.
    extra = [p for p in semantic_problems(doc, faulty) if p.location not in reported]
    return sorted(problems + extra, key=_order)


def _order(error: SpecError) -> tuple[int, int]:
    location = error.location or Location()
    return (location.line or 0, location.col or 0)


_SECTIONS = {
    "memory": memory_section,
    "smoke": smoke_section,
    "quality": quality_section,
    "publish": publish_section,
}


def _section(doc: Located, name: str) -> Any:
    data = cast(dict[str, Any], doc.data)
    raw = data.get(name)
    return None if raw is None else _SECTIONS[name](doc, raw)


def _build(doc: Located, path: Path) -> ModelSpec:
    data = cast(dict[str, Any], doc.data)
    marks = tuple(data.get("marks", ()))
    build = _build_spec(doc, path.parent)
    return ModelSpec(
        path=path,
        name=data.get("name") or path.resolve().parent.name,
        description=data.get("description"),
        marks=marks,
        packerfile=path.parent / data.get("packerfile", "GGUFPackerfile"),
        build=build,
        source=_source(doc),
        checks=tuple(_checks(doc, marks)),
        expect_location=doc.keys.get(("expect",)),
        memory=_section(doc, "memory"),
        smoke=_section(doc, "smoke"),
        quality=_section(doc, "quality"),
        publish=_section(doc, "publish"),
        doc=doc,
    )


def _args(raw: dict[str, Any] | None) -> dict[str, str]:
    # Build args are strings to the Packerfile; YAML numbers are written as their text.
    return {
        name: value if isinstance(value, str) else str(value) for name, value in (raw or {}).items()
    }


def _build_spec(doc: Located, base: Path) -> BuildSpec:
    raw: dict[str, Any] = cast(dict[str, Any], doc.data).get("build", {})
    contexts = {}
    for name, value in raw.get("contexts", {}).items():
        kind, text = ("path", value) if isinstance(value, str) else next(iter(value.items()))
        kind = cast(ContextKind, kind)
        contexts[name] = Context(
            name, kind, text, doc.key_location(("build", "contexts", name)), base
        )
    variants = tuple(
        Variant(item["name"], _args(item.get("args")), doc.value_location(("build", "variants", i)))
        for i, item in enumerate(raw.get("variants", ()))
    )
    return BuildSpec(
        args=_args(raw.get("args")),
        target=raw.get("target"),
        contexts=contexts,
        builder=raw.get("builder", "native"),
        variants=variants,
        location=doc.keys.get(("build",)),
    )


def _source(doc: Located) -> SourceSpec | None:
    raw = cast(dict[str, Any], doc.data).get("source")
    if raw is None:
        return None
    # Problems with a source are about the file or image it names, so point at that line.
    where = doc.key_location(("source", "gguf" if "gguf" in raw else "image"))
    return SourceSpec(raw.get("gguf"), raw.get("image"), raw.get("from"), where)


def _checks(doc: Located, marks: tuple[str, ...]) -> list[Check]:
    expect: dict[str, Any] = cast(dict[str, Any], doc.data).get("expect", {})
    checks = []
    for key, raw in expect.items():
        if key in ("metadata", "labels"):
            for name, value in raw.items():
                path: DataPath = ("expect", key, name)
                matcher = parse_matcher(
                    value, doc.value_location(path), inner_locations(doc, path, value)
                )
                checks.append(
                    Check("expect", f"{key}::{name}", matcher, doc.key_location(path), marks)
                )
        else:
            path = ("expect", key)
            expected = parse_expectation(
                key, raw, doc.value_location(path), inner_locations(doc, path, raw)
            )
            checks.append(Check("expect", key, expected, doc.key_location(path), marks))
    return checks
