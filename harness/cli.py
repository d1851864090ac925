"""The `gguf-harness` command: argument parsing and presentation over the core, nothing more."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harness import __version__
from harness.build import BuildOptions, build
from harness.errors import HarnessError, UsageError
from harness.expect import validate
from harness.gguf import GGUFFacts, read_facts
from harness.packerfile import lint
from harness.units import format_count, format_size

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except HarnessError as error:
        print(f"gguf-harness: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gguf-harness: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gguf-harness",
        description="Build, validate, estimate, smoke-test and publish GGUF models.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    inspect = commands.add_parser("inspect", help="show what GGUF files are (header only, fast)")
    inspect.add_argument("files", nargs="+", metavar="FILE")
    inspect.add_argument("--json", action="store_true", help="one JSON object per file, as a list")
    inspect.set_defaults(run=_inspect)

    check = commands.add_parser("validate", help="check model.yaml files against the schema")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.set_defaults(run=_validate)

    lint = commands.add_parser("lint", help="check Packerfiles: every problem, with file:line:col")
    lint.add_argument("paths", nargs="*", default=["."], metavar="FILE|DIR")
    lint.set_defaults(run=_lint)

    build = commands.add_parser(
        "build", help="build a Packerfile into an OCI image layout (natively, no Docker)"
    )
    build.add_argument("context", metavar="CONTEXT", help="the build context directory")
    build.add_argument("-f", "--file", dest="packerfile", help="the Packerfile (default: found)")
    build.add_argument("--build-arg", action="append", default=[], metavar="K=V")
    build.add_argument("--target", help="the stage to build (default: the last)")
    build.add_argument(
        "--build-context",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a named context for COPY --from=NAME",
    )
    build.add_argument("--tag", default="latest", metavar="NAME:TAG")
    build.add_argument("--label", action="append", default=[], metavar="K=V")
    build.add_argument("--output", "-o", default=None, metavar="DIR", help="default: ./out/NAME")
    build.add_argument("--no-cache", action="store_true", help="run every step again")
    build.add_argument("--compression", choices=("gzip", "zstd", "none"), default="gzip")
    build.set_defaults(run=_build)

    test = commands.add_parser(
        "test",
        help="run every model's checks with pytest (extra arguments go to pytest)",
        description="Runs pytest with the gguf-harness plugin; exit codes are pytest's.",
    )
    test.add_argument("pytest_args", nargs=argparse.REMAINDER, metavar="[PATH] [PYTEST ARG]")
    test.set_defaults(run=_test)
    return parser


def _inspect(args: argparse.Namespace) -> int:
    facts = [read_facts(path) for path in args.files]
    if args.json:
        print(json.dumps([f.to_json() for f in facts], indent=2))
        return 0
    Console().print(_facts_table(facts))
    return 0


def _facts_table(facts: list[GGUFFacts]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("FILE", "ARCH", "NAME", "TYPE", "PARAMS", "BPW", "SIZE", "CONTEXT", "TENSORS"):
        table.add_column(column, justify="right" if column in {"PARAMS", "BPW", "SIZE"} else "left")
    for f in facts:
        file_type = f"{f.file_type} (inferred)" if f.file_type_inferred else f.file_type
        table.add_row(
            f.path,
            f.architecture,
            f.name or "",
            file_type,
            format_count(f.parameters),
            f"{f.bpw:.2f}",
            format_size(f.size),
            str(f.context_length or ""),
            str(f.tensor_count),
        )
    return table


def _validate(args: argparse.Namespace) -> int:
    failed = False
    for path in args.files:
        problems = validate(path)
        for problem in problems:
            print(problem)
        if problems:
            failed = True
        else:
            print(f"{path}: ok")
    return 1 if failed else 0


def _lint(args: argparse.Namespace) -> int:
    problems = lint([Path(p) for p in args.paths])
    for problem in problems:
        print(problem)
    return 1 if problems else 0


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} {value!r}: expected KEY=VALUE")
        pairs[key] = rest
    return pairs


def _build(args: argparse.Namespace) -> int:
    name, _, tag = args.tag.rpartition(":") if ":" in args.tag else (args.tag, "", "latest")
    output = Path(args.output) if args.output else Path("out", name.rsplit("/", 1)[-1] or "image")
    options = BuildOptions(
        context=Path(args.context),
        output=output,
        packerfile=args.packerfile,
        build_args=_pairs(args.build_arg, "--build-arg"),
        target=args.target,
        contexts={k: Path(v) for k, v in _pairs(args.build_context, "--build-context").items()},
        tag=tag or "latest",
        labels=_pairs(args.label, "--label"),
        no_cache=args.no_cache,
        compression=args.compression,
    )
    console = Console(stderr=True)
    result = build(options, report=lambda message: console.print(f"[dim]=>[/dim] {message}"))
    print(f"{result.output} {result.manifest.digest}")
    return 0


def _test(args: argparse.Namespace) -> int:
    # A fresh interpreter: pytest must import the plugin (and rewrite asserts) itself, which it
    # cannot do for modules this process has already imported.
    return subprocess.call([sys.executable, "-m", "pytest", *args.pytest_args])


if __name__ == "__main__":
    sys.exit(main())
