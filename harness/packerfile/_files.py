"""Packerfiles on disk: finding one in a build context, loading it, linting several."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from harness.errors import Location, PackerfileError, PackerfileWarning, UsageError
from harness.packerfile._parse import parse
from harness.packerfile._plan import check_all
from harness.packerfile._records import Packerfile

__all__ = ["DEFAULT_NAMES", "find_packerfile", "lint", "load"]

# Tried in this order; the seed also accepts the lower-case spelling.
DEFAULT_NAMES = ("GGUFPackerfile", "ggufpackerfile", "Dockerfile", "dockerfile")


def find_packerfile(context_dir: str | os.PathLike[str], name: str | None = None) -> Path:
    """The Packerfile of a build context: ``name`` (relative to the context unless absolute),
    else its GGUFPackerfile, else its Dockerfile. UsageError when there is none."""
    context = Path(context_dir)
    if not context.is_dir():
        raise UsageError(f"build context {context} is not a directory")
    if name is not None:
        path = Path(name) if Path(name).is_absolute() else context / name
        if not path.is_file():
            raise UsageError(f"no Packerfile at {path}")
        return path
    for candidate in DEFAULT_NAMES:
        path = context / candidate
        if path.is_file():
            return path
    raise UsageError(f"no GGUFPackerfile or Dockerfile in {context}")


def load(path: str | os.PathLike[str]) -> Packerfile:
    """Read and parse a Packerfile; a ``Dockerfile`` needs the gguf-packer syntax directive."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"no such file: {file}") from None
    except IsADirectoryError:
        raise UsageError(f"{file} is a directory, not a Packerfile") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        col = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise PackerfileError(
            "not UTF-8 text: a Packerfile must be UTF-8", Location(file, line, col), code="encoding"
        ) from None
    return parse(text, str(file))


def lint(
    paths: Iterable[str | os.PathLike[str]],
    *,
    include_warnings: bool = False,
    arg_sets: Sequence[Mapping[str, str]] = ({},),
) -> list[PackerfileError]:
    """Every problem of every file (a directory stands for its Packerfile), by file and line.

    Beyond parse(), each stage is planned with its default args and then with each set of
    ``arg_sets`` (a model.yaml's build args, one set per variant), so values that are invalid
    only once expanded are reported too. Missing files raise UsageError.
    """
    problems: list[PackerfileError] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            path = find_packerfile(path)
        try:
            packerfile = load(path)
        except PackerfileError as err:
            problems.extend(err.problems)
            continue
        for build_args in arg_sets:
            problems.extend(check_all(packerfile, build_args))
        problems.extend(packerfile.warnings)
    unique: dict[tuple[str, Location | None, str], PackerfileError] = {}
    for problem in problems:
        if include_warnings or not isinstance(problem, PackerfileWarning):
            unique.setdefault((problem.code, problem.location, problem.message), problem)
    return sorted(unique.values(), key=PackerfileError.sort_key)
