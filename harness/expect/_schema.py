"""Validate located YAML against schemas/model.schema.json and word each problem for a person.

jsonschema's own messages name schema internals ("is not valid under any of the given schemas");
here every error kind the schema can raise gets a sentence, and alternatives (anyOf/oneOf) report
the branch the value was evidently meant for.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from harness.errors import Location, SpecError

from ._yaml import DataPath, Located

__all__ = ["dotted", "load_schema", "schema_problems", "show"]

_SCHEMA_NAME = "model.schema.json"
# Errors about the value itself (its type or text), as opposed to about keys inside it.
_SHAPE = frozenset(
    {
        "type",
        "const",
        "enum",
        "pattern",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "multipleOf",
    }
)  # maxLength is not among them: a string too long has its branch's shape, just too much of it
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
# Messages quote what was written; a hostile file may write 64 KiB where a word belongs.
_QUOTED = 60

Problem = tuple[Location, str]


@lru_cache(maxsize=1)
def load_schema() -> Mapping[str, Any]:
    """The model.yaml schema: the installed copy (harness/schemas), else the repository's."""
    installed = resources.files("harness").joinpath("schemas").joinpath(_SCHEMA_NAME)
    if installed.is_file():
        text = installed.read_text(encoding="utf-8")
    else:
        text = (Path(__file__).resolve().parents[2] / "schemas" / _SCHEMA_NAME).read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    return Draft202012Validator(load_schema())


def schema_problems(doc: Located) -> tuple[list[SpecError], set[DataPath]]:
    """Every schema violation in ``doc`` in file order, and the paths of the values at fault."""
    if doc.data is None:
        empty = SpecError(
            "the file is empty: expected a mapping with 'schemaVersion: 1'",
            Location(doc.path, 1, 1),
        )
        return [empty], {()}
    errors = list(_validator().iter_errors(doc.data))
    # A value of the wrong type fails other keywords too (`required` on null); say it once.
    mistyped = {tuple(e.absolute_path) for e in errors if e.validator == "type"}
    found: dict[Problem, None] = {}
    for error in errors:
        if error.validator != "type" and tuple(error.absolute_path) in mistyped:
            continue
        for problem in _Renderer(doc).render(error):
            found.setdefault(problem)
    paths = {tuple(error.absolute_path) for error in errors}
    return [SpecError(message, location) for location, message in sorted(found, key=_order)], paths


def _order(problem: Problem) -> tuple[int, int, str]:
    location, message = problem
    return (location.line or 0, location.col or 0, message)


def dotted(path: Sequence[str | int]) -> str:
    """``memory.budgets[0].vram``; other keys in brackets: ``metadata['a.b']``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENTIFIER.fullmatch(part) and len(part) <= _QUOTED:
            text += f".{part}" if text else part
        else:
            text += f"[{show(part)}]"
    return text


def show(value: object) -> str:
    """A value as a YAML reader would recognise it in a message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str) and len(value) > _QUOTED:
        return f"{value[:_QUOTED]!r}... ({len(value)} characters)"
    if isinstance(value, (str, int, float)):
        return repr(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _quoted(items: Iterable[object]) -> str:
    return ", ".join(show(item) for item in items)


def _join_or(phrases: Sequence[str]) -> str:
    unique = list(dict.fromkeys(phrases))
    if len(unique) == 1:
        return "true or false" if unique[0] == "a boolean" else unique[0]
    return ", ".join(unique[:-1]) + " or " + unique[-1]


def _resolve(schema: Any) -> Mapping[str, Any]:
    # The schema only refers within itself (#/$defs/...), so a walk down from the root suffices.
    while isinstance(schema, Mapping) and "$ref" in schema:
        target: Any = load_schema()
        for part in str(schema["$ref"]).removeprefix("#/").split("/"):
            target = target[part]
        schema = target
    return schema if isinstance(schema, Mapping) else {}


def describe(schema: Any) -> str:
    """What a schema accepts, as a noun phrase: 'a number or an object with min/max'."""
    return _join_or(_phrases(schema))


def _phrases(schema: Any) -> list[str]:
    schema = _resolve(schema)
    if "const" in schema:
        return [show(schema["const"])]
    if "enum" in schema:
        return ["one of " + _quoted(schema["enum"])]
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    if alternatives and "type" not in schema:
        return [phrase for branch in alternatives for phrase in _phrases(branch)]
    kinds = schema.get("type")
    if isinstance(kinds, list):
        return [_type_phrase(kind, {}) for kind in kinds]
    return [_type_phrase(str(kinds), schema)] if kinds else ["a valid value"]


def _type_phrase(kind: str, schema: Mapping[str, Any]) -> str:
    if kind == "string":
        examples = schema.get("examples")
        if "pattern" in schema and examples:
            noun = str(schema.get("title", "string")).lower()
            return f"a {noun} like " + " or ".join(repr(example) for example in examples[:2])
        return "a string"
    if kind in ("integer", "number"):
        noun = "a whole number" if kind == "integer" else "a number"
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is not None and high is not None:
            return f"{noun} from {low} to {high}"
        if schema.get("exclusiveMinimum") is not None:
            return f"{noun} > {schema['exclusiveMinimum']}"
        if low is not None and low != 0:
            return f"{noun} >= {low}"
        return noun
    if kind == "object":
        names = list(schema.get("properties", {}))
        return "an object with " + "/".join(names) if 0 < len(names) <= 3 else "a mapping"
    return {"boolean": "a boolean", "array": "a list", "null": "null"}.get(kind, f"a {kind}")


def _is_required_only(branches: Sequence[Any]) -> bool:
    return all(set(_resolve(branch)) == {"required"} for branch in branches)


def _is_key_error(error: ValidationError) -> bool:
    return "propertyNames" in error.relative_schema_path


def _branches(error: ValidationError) -> list[list[ValidationError]]:
    grouped: dict[object, list[ValidationError]] = {}
    for sub in error.context or ():
        grouped.setdefault(sub.relative_schema_path[0], []).append(sub)
    return list(grouped.values())


def _operand(error: ValidationError) -> Any:
    """The keyword's value in the schema (jsonschema types it loosely)."""
    return error.validator_value


def _fits(error: ValidationError, parent: ValidationError) -> bool:
    """Whether ``error`` says the value had the branch's shape but wrong contents."""
    if len(error.absolute_path) > len(parent.absolute_path) or _is_key_error(error):
        return True
    if error.validator in ("anyOf", "oneOf"):
        if _is_required_only(_operand(error)):
            return True
        return any(all(_fits(sub, error) for sub in branch) for branch in _branches(error))
    return error.validator not in _SHAPE


class _Renderer:
    def __init__(self, doc: Located) -> None:
        self._doc = doc

    def render(self, error: ValidationError) -> list[Problem]:
        path: DataPath = tuple(error.absolute_path)
        prefix = f"{dotted(path)}: " if path else ""
        kind, value = str(error.validator), _operand(error)
        instance: Any = error.instance
        if _is_key_error(error):
            return self._key_problem(error, path, prefix)
        if kind in ("anyOf", "oneOf"):
            return self._alternatives(error, path, prefix)
        if kind == "additionalProperties":
            return self._unknown_keys(error, path)
        where = self._where(path, instance)
        if kind == "required":
            missing = [name for name in value if name not in instance]
            missing = [name for name in missing if name not in _misspelt(error)]
            return [(where, f"{prefix}missing required key {show(name)}") for name in missing]
        if kind == "enum":
            return [
                (
                    where,
                    f"{prefix}expected one of {_quoted(value)}, got {show(instance)}"
                    + _suggest(instance, value),
                )
            ]
        if kind == "const":
            return [(where, f"{prefix}expected {show(value)}, got {show(instance)}")]
        if kind == "pattern":
            like = error.schema.get("examples") if isinstance(error.schema, Mapping) else None
            hint = f" (like {show(like[0])})" if like else ""
            return [(where, f"{prefix}{show(instance)} does not match {value}{hint}")]
        if kind == "minLength" and value == 1:
            return [(where, f"{prefix}must not be empty")]
        if kind == "maxLength":
            return [(where, f"{prefix}{len(instance)} characters, over the {value} allowed")]
        if kind in _SHAPE:
            return [(where, f"{prefix}expected {describe(error.schema)}, got {show(instance)}")]
        return [(where, prefix + _collection_message(kind, value, instance, error.schema))]

    def _where(self, path: DataPath, instance: object) -> Location:
        # Scalars point at the value; mappings, lists and empty values at the key naming them.
        if instance is None or isinstance(instance, (dict, list)):
            return self._doc.key_location(path)
        return self._doc.value_location(path)

    def _key_problem(self, error: ValidationError, path: DataPath, prefix: str) -> list[Problem]:
        key: Any = error.instance
        if error.validator == "maxLength" and isinstance(key, str):
            where = self._doc.key_location((*path, key))
            limit = _operand(error)
            return [(where, f"{prefix}key {show(key)}: {len(key)} characters, over the {limit}")]
        where = (
            self._doc.key_location((*path, key))
            if isinstance(key, str)
            else self._where(path, None)
        )
        schema = error.schema if isinstance(error.schema, Mapping) else {}
        pattern = schema.get("pattern")
        rule = f" does not match {pattern}" if pattern else f" is not {describe(schema)}"
        like = schema.get("examples")
        hint = f" (like {show(like[0])})" if like else ""
        return [(where, f"{prefix}key {show(key)}{rule}{hint}")]

    def _unknown_keys(self, error: ValidationError, path: DataPath) -> list[Problem]:
        schema = error.schema if isinstance(error.schema, Mapping) else {}
        allowed = list(schema.get("properties", {}))
        patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
        problems = []
        instance: Any = error.instance
        for key in instance:
            if key in allowed or any(p.search(key) for p in patterns):
                continue
            close = _suggest(key, allowed)
            if not close and allowed:
                close = f" (expected one of {_quoted(allowed)})"
            problems.append(
                (self._doc.key_location((*path, key)), f"unknown key {show(key)}{close}")
            )
        return problems

    def _alternatives(self, error: ValidationError, path: DataPath, prefix: str) -> list[Problem]:
        branches: Sequence[Any] = _operand(error)
        where = self._where(path, error.instance)
        if _is_required_only(branches):
            names = [name for branch in branches for name in _resolve(branch)["required"]]
            if _misspelt(error).intersection(names):
                return []  # the unknown-key problem already says what to write instead
            word = "exactly one" if error.validator == "oneOf" else "at least one"
            return [(where, f"{prefix}needs {word} of {_quoted(names)}")]
        fitting = [
            branch for branch in _branches(error) if all(_fits(sub, error) for sub in branch)
        ]
        if fitting:
            best = min(fitting, key=len)
            return [problem for sub in best for problem in self.render(sub)]
        if not error.context:  # oneOf: more than one branch matched
            return [
                (
                    where,
                    f"{prefix}{show(error.instance)} is ambiguous:"
                    f" expected {describe(error.schema)}",
                )
            ]
        return [(where, f"{prefix}expected {describe(error.schema)}, got {show(error.instance)}")]


def _misspelt(error: ValidationError) -> set[str]:
    """Known keys that the mapping's unknown keys look like typos of."""
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    allowed = list(schema.get("properties", {}))
    instance: Any = error.instance
    unknown = [key for key in instance if key not in allowed] if isinstance(instance, dict) else []
    return {match for key in unknown for match in _closest(key, allowed)[:1]}


def _closest(word: str, names: list[str]) -> list[str]:
    by_case = {name.lower(): name for name in names}
    if word.lower() in by_case:
        return [by_case[word.lower()]]
    return difflib.get_close_matches(word, names, n=1, cutoff=0.6)


def _suggest(word: object, choices: Iterable[object]) -> str:
    if not isinstance(word, str):
        return ""
    close = _closest(word, [str(choice) for choice in choices])
    return f" (did you mean {close[0]!r}?)" if close else ""


def _collection_message(kind: str, value: Any, instance: Any, schema: Any) -> str:
    if kind == "minItems":
        return f"expected at least {value} item{'s' if value != 1 else ''}, got {len(instance)}"
    if kind == "maxItems":
        return f"expected at most {value} item{'s' if value != 1 else ''}, got {len(instance)}"
    if kind == "uniqueItems":
        seen: list[object] = []
        for item in instance:
            if item in seen:
                return f"{show(item)} is listed twice"
            seen.append(item)
        return "items must be unique"
    if kind == "minProperties":
        names = list(_resolve(schema).get("properties", {}))
        return f"expected at least one of {_quoted(names)}" if names else "must not be empty"
    if kind == "maxProperties":
        return f"{len(instance)} keys, over the {value} allowed"
    return f"{show(instance)} is not allowed here ({kind})"
