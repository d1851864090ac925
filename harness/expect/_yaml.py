"""YAML to plain data plus the 1-based line:col of every key and value.

Scalars resolve as YAML 1.2's core schema (what yaml-language-server uses), not pyyaml's YAML 1.1:
``no``/``on`` stay strings, ``1e-5`` is a float, ``0755`` is 755, dates stay strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.errors import Location, SpecError

__all__ = ["MAX_DEPTH", "MAX_NODES", "MAX_YAML_BYTES", "DataPath", "Located", "load_located"]

#: A model.yaml is a few KB: these bound what a hostile one may cost (docs/limits.md).
MAX_YAML_BYTES = 1 << 20
#: Values after aliases are expanded: nested anchors can multiply a few hundred bytes into
#: billions of nodes ("billion laughs"); walking stops at this many.
MAX_NODES = 100_000
#: Nesting, aliases expanded: a model.yaml is a few levels deep. pyyaml recurses once per level
#: and its scanner re-checks every open ``[``/``{`` at each token (quadratic in ``[[[[``).
MAX_DEPTH = 100
# Integers a model.yaml may write: 64 bits (uint64 metadata). Wider ones are mistakes, and
# hexadecimal escapes Python's 4300-digit limit only to fail later when printed in decimal.
_INT_BITS = 64

DataPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Located:
    """Plain data (dicts, lists, str, int, float, bool, None) with where each part was written."""

    data: Any
    path: str
    keys: dict[DataPath, Location]  # the key of each mapping entry, by the entry's path
    values: dict[DataPath, Location]  # each value (mapping values, list items, the root)

    def value_location(self, path: DataPath) -> Location:
        """Where the value at ``path`` starts, else its nearest written ancestor."""
        return _nearest(self.values, path) or Location(self.path, 1, 1)

    def key_location(self, path: DataPath) -> Location:
        """The key introducing ``path``; a list item or the root point at their value."""
        return self.keys.get(path) or self.value_location(path)


def _nearest(table: dict[DataPath, Location], path: DataPath) -> Location | None:
    for end in range(len(path), -1, -1):
        found = table.get(path[:end])
        if found is not None:
            return found
    return None


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema scalars and nesting bounded by MAX_DEPTH."""

    def __init__(self, stream: str) -> None:
        self._depth = 0
        self._nodes = 0  # composed so far: the walker counts again with aliases expanded
        super().__init__(stream)

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:
        if self.flow_level >= MAX_DEPTH:  # checked while scanning: the scanner reads ahead
            raise yaml.scanner.ScannerError(None, None, _TOO_DEEP, self.get_mark())
        super().fetch_flow_collection_start(TokenClass)

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._nodes += 1
        if self._depth >= MAX_DEPTH or self._nodes > MAX_NODES:  # stop reading at once
            event = self.peek_event()  # type: ignore[no-untyped-call]
            problem = _TOO_DEEP if self._depth >= MAX_DEPTH else _TOO_MANY
            raise yaml.composer.ComposerError(None, None, problem, event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_TOO_DEEP = f"nested too deeply (more than {MAX_DEPTH} levels)"
_TOO_MANY = f"more than {MAX_NODES} keys and values"


_Loader.yaml_implicit_resolvers = {}
_IMPLICIT: list[tuple[str, str, str]] = [
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("null", r"^(?:~|null|Null|NULL|)$", "~nN"),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+.0123456789",
    ),
]
for _tag, _pattern, _first in _IMPLICIT:
    _Loader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_pattern), list(_first))
_Loader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^$"), [""])
_Loader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^<<$"), ["<"])


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    if text.startswith(("0o", "0x")):
        value = int(text[2:], 8 if text[1] == "o" else 16)
    else:
        value = int(text, 10)
    if value.bit_length() > _INT_BITS:
        raise ValueError(f"wider than {_INT_BITS} bits")
    return value


def _construct_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    text = str(loader.construct_scalar(node)).lower()
    if text.endswith(".inf"):
        return float("-inf") if text.startswith("-") else float("inf")
    if text == ".nan":
        return float("nan")
    return float(text)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)
_LOADER: type[_Loader] = _Loader
try:
    from yaml._yaml import CParser
except ImportError:  # pyyaml built without libyaml: its own scanner, slower
    pass
else:

    class _FastLoader(CParser, _Loader):
        """_Loader reading its events from libyaml (when pyyaml was built with it): pyyaml's own
        scanner is most of the time of collecting a repository of models (100 model.yaml files:
        0.7 s). Composing, the depth and node bounds, the checks of characters (pyyaml's reader),
        resolving and constructing stay _Loader's, in Python; libyaml scans without recursing."""

        def __init__(self, stream: str) -> None:
            _Loader.__init__(self, stream)
            CParser.__init__(self, stream)

        get_single_node = yaml.composer.Composer.get_single_node
        dispose = _Loader.dispose

    _LOADER = _FastLoader


def load_located(path: str | Path) -> Located:
    """Read ``path``; raise SpecError at the first syntax error or duplicate key."""
    shown = str(path)
    try:
        with open(path, "rb") as file:  # a character is at most 4 bytes: read no more than that
            data = file.read(4 * MAX_YAML_BYTES + 1)
    except OSError as error:
        raise SpecError(
            f"cannot read the file: {error.strerror or error}", Location(shown)
        ) from None
    if len(data) > 4 * MAX_YAML_BYTES:
        raise SpecError(
            f"more than {4 * MAX_YAML_BYTES} bytes: over the {MAX_YAML_BYTES} characters"
            " a model.yaml may have",
            Location(shown),
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        head = data[: error.start]
        column = len(head[head.rfind(b"\n") + 1 :].decode("utf-8", "replace")) + 1
        raise SpecError(
            f"not UTF-8 text: {error.reason} (byte {error.start})",
            Location(shown, head.count(b"\n") + 1, column),
        ) from None
    return loads_located(text, shown)


def loads_located(text: str, path: str) -> Located:
    """Like :func:`load_located` for text already read; ``path`` is only for locations."""
    if len(text) > MAX_YAML_BYTES:
        raise SpecError(
            f"{len(text)} characters: over the {MAX_YAML_BYTES} a model.yaml may have",
            Location(path),
        )
    if _LOADER is _Loader:
        return _compose(text, path, _Loader)
    try:
        return _compose(text, path, _LOADER)
    except SpecError:
        # Rare, so read again by pyyaml alone: its messages and bounds are the ones documented
        # and tested (libyaml words some errors differently, and stops nesting at 1000, not 100).
        return _compose(text, path, _Loader)


def _compose(text: str, path: str, loader_class: type[_Loader]) -> Located:
    try:
        loader = loader_class(text)  # checks that every character is printable
    except yaml.reader.ReaderError as error:
        raise _reader_error(error, text, path) from None
    try:
        root = loader.get_single_node()
        located = Located(None, path, {}, {})
        if root is not None:
            data = _Walker(loader, located).walk(root, (), ())
            located = Located(data, path, located.keys, located.values)
        return located
    except yaml.MarkedYAMLError as error:
        raise _syntax_error(error, path) from None
    except yaml.reader.ReaderError as error:
        raise _reader_error(error, text, path) from None
    except yaml.YAMLError as error:  # unmarked, and none known: one line, at the file
        first = str(error).split("\n", 1)[0]
        raise SpecError(f"invalid YAML: {first}", Location(path)) from None
    except RecursionError:  # not expected past MAX_DEPTH: where the scanner stopped
        mark = loader.get_mark()
        location = Location(path, mark.line + 1, mark.column + 1)
        raise SpecError(f"invalid YAML: {_TOO_DEEP}", location) from None
    finally:
        loader.dispose()


def _reader_error(error: yaml.reader.ReaderError, text: str, path: str) -> SpecError:
    at = error.position
    line, column = text.count("\n", 0, at) + 1, at - text.rfind("\n", 0, at)
    character = error.character if isinstance(error.character, int) else 0
    return SpecError(
        f"invalid YAML: character #x{character:04x} is not allowed ({error.reason})",
        Location(path, line, column),
    )


def _syntax_error(error: yaml.MarkedYAMLError, path: str) -> SpecError:
    mark = error.problem_mark or error.context_mark
    problem, context = error.problem or "", error.context or ""
    if problem.startswith("but ") and context:  # pyyaml splits "expected X, but found Y" in two
        message = f"{context}, {problem}"
    elif problem and context and error.context_mark is not None:
        message = f"{problem} ({context} at line {error.context_mark.line + 1})"
    else:
        message = problem or context or "syntax error"
    if "'\\t'" in message:
        message += " (indent with spaces, not tabs)"
    location = Location(path, mark.line + 1, mark.column + 1) if mark else Location(path)
    return SpecError(f"invalid YAML: {message}", location)


def _location(path: str, node: yaml.Node) -> Location:
    return Location(path, node.start_mark.line + 1, node.start_mark.column + 1)


class _Walker:
    def __init__(self, loader: _Loader, located: Located) -> None:
        self._loader = loader
        self._located = located
        self._nodes = 0

    def walk(self, node: yaml.Node, path: DataPath, stack: tuple[int, ...]) -> Any:
        if id(node) in stack:  # an alias to an enclosing node would never end
            raise SpecError("recursive alias", _location(self._located.path, node))
        if len(stack) >= MAX_DEPTH:  # aliases nest documents of MAX_DEPTH inside each other
            raise SpecError(
                f"{_TOO_DEEP} once aliases are expanded", _location(self._located.path, node)
            )
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise SpecError(
                f"more than {MAX_NODES} values once aliases are expanded (an alias bomb?)",
                _location(self._located.path, node),
            )
        self._located.values[path] = _location(self._located.path, node)
        stack = (*stack, id(node))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, stack)
        if isinstance(node, yaml.SequenceNode):
            return [self.walk(item, (*path, i), stack) for i, item in enumerate(node.value)]
        try:
            return self._loader.construct_object(node, deep=True)
        except (ValueError, TypeError, OverflowError, KeyError, AttributeError) as error:  # !!int x
            tag = str(node.tag).rsplit(":", 1)[-1]
            value = str(node.value)[:40] + ("..." if len(str(node.value)) > 40 else "")
            raise SpecError(
                f"invalid value: {value!r} is not a valid {tag} ({str(error)[:120]})",
                _location(self._located.path, node),
            ) from None

    def _mapping(self, node: yaml.MappingNode, path: DataPath, stack: tuple[int, ...]) -> Any:
        first_seen: dict[str, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self._key(key_node)
            if key in first_seen:
                line = first_seen[key].start_mark.line + 1
                raise SpecError(
                    f"duplicate key {key!r} (first defined at line {line})",
                    _location(self._located.path, key_node),
                )
            first_seen[key] = key_node
        # `<<: *anchor` merges; the entries written here come last so they win.
        self._loader.flatten_mapping(node)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self._key(key_node)
            entry: DataPath = (*path, key)
            self._located.keys[entry] = _location(self._located.path, key_node)
            result[key] = self.walk(value_node, entry, stack)
        return result

    def _key(self, node: yaml.Node) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise SpecError("a key must be a plain string", _location(self._located.path, node))
        return str(node.value)
