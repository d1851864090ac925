"""The CLI's commands: each takes the parsed arguments, calls the chain, prints what it gives.

Imported only once a command was parsed, so that ``gguf-harness --help`` loads none of the chain;
and each command imports the part of the chain it calls, so that ``inspect FILE`` reads a header
without loading the builder, the registry client, jsonschema or numpy (tests/test_startup.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import UsageError, printable
from harness.units import format_size, parse_size

from ._push import push_command
from ._serve import run_command, smoke_command

if TYPE_CHECKING:
    from harness.gguf import GGUFFacts

__all__ = [
    "action_command",
    "build_command",
    "diff_command",
    "estimate_command",
    "init_command",
    "inspect_command",
    "lint_command",
    "list_command",
    "matrix_command",
    "pull_command",
    "push_command",
    "quality_command",
    "remove_command",
    "run_command",
    "smoke_command",
    "test_command",
    "toolchain_command",
    "validate_command",
]


def inspect_command(args: argparse.Namespace) -> int:
    from harness.gguf import read_facts

    if not any(_on_disk(name) for name in args.files):
        # Not files: stored models. A summary to read; --json: the full image config.
        from harness.store import Store

        store = Store()
        if args.json:
            configs = [store.inspect(ref) for ref in args.files]
            print(json.dumps(configs[0] if len(configs) == 1 else configs, indent=2))
            return 0
        from ._tables import print_summary

        for ref in args.files:
            print_summary(store.summary(ref))
        return 0
    # GGUF files, OCI layouts and model directories alike: the facts of the model each names.
    facts = [
        read_facts(name) if Path(name).is_file() else _artifact_facts(name) for name in args.files
    ]
    if args.json:
        print(json.dumps([f.to_json() for f in facts], indent=2))
        return 0
    from ._tables import print_facts

    print_facts(facts)
    return 0


def _artifact_facts(name: str) -> GGUFFacts:
    from harness.pipeline import resolve_artifact

    return resolve_artifact(name).subject.facts


def _on_disk(name: str) -> bool:
    """A file, a directory, or an OCI layout as ``DIR:TAG`` / ``oci:DIR``: not a store REF."""
    if name.startswith(("oci:", "oci-layout://")):
        return True
    return Path(name).exists() or (":" in name and Path(name.rpartition(":")[0]).is_dir())


def validate_command(args: argparse.Namespace) -> int:
    from harness.expect import validate

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


def lint_command(args: argparse.Namespace) -> int:
    from harness.expect import load_spec
    from harness.packerfile import lint
    from harness.pipeline import lint_model

    # A model directory is linted with every set of build args its model.yaml builds with.
    models = [Path(p) for p in args.paths if (Path(p) / "model.yaml").is_file()]
    problems = lint([Path(p) for p in args.paths if Path(p) not in models])
    for directory in models:
        problems += lint_model(load_spec(directory / "model.yaml"))
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


def build_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    from harness.builder import BuildOptions, build_with
    from harness.expect import load_spec
    from harness.pipeline import model_build_options

    name, _, tag = args.tag.rpartition(":") if ":" in args.tag else (args.tag, "", "latest")
    # A model directory builds as its model.yaml says; what the command line gives wins.
    model_yaml = Path(args.context) / "model.yaml"
    spec = load_spec(model_yaml) if model_yaml.is_file() and not args.packerfile else None
    if spec is not None and ":" not in args.tag and args.tag == "latest":
        name = spec.name
    output = Path(args.output) if args.output else Path("out", name.rsplit("/", 1)[-1] or "image")
    base = model_build_options(spec, output, None) if spec is not None else None
    cli_contexts = {k: Path(v) for k, v in _pairs(args.build_context, "--build-context").items()}
    options = BuildOptions(
        context=Path(args.context),
        output=output,
        packerfile=args.packerfile or (base.packerfile if base else None),
        build_args={
            **(base.build_args if base else {}),
            **_pairs(args.build_arg, "--build-arg"),
        },
        target=args.target or (base.target if base else None),
        contexts={**(base.contexts if base else {}), **cli_contexts},
        tag=tag or "latest",
        labels=_pairs(args.label, "--label"),
        no_cache=args.no_cache,
        compression=args.compression,
    )
    console = Console(stderr=True)
    result = build_with(
        options,
        builder=args.builder or ("buildx" if args.buildx_builder else None),
        declared=spec.build.builder if spec is not None else "native",
        frontend=args.frontend,
        buildx_builder=args.buildx_builder,
        report=lambda message: console.print(f"[dim]=>[/dim] {message}"),
    )
    print(f"{result.output} {result.manifest.digest}")
    return 0


def _estimate_words(words: list[str]) -> tuple[list[str], list[int], int | None, bool]:
    """(llama-server argv, GPU sizes, --gpu-layers-step, --json) from what followed MODEL."""
    server: list[str] = []
    gpus: list[int] = []
    step: int | None = None
    as_json = False
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--json":
            as_json = True
        elif word in ("--gpu", "--gpu-layers-step"):
            if i + 1 >= len(words):
                raise UsageError(f"estimate: {word} needs a value")
            value = words[i + 1]
            i += 1
            if word == "--gpu":
                gpus.append(parse_size(value))
            else:
                step = _positive(value, word)
        else:
            server.append(word)
        i += 1
    return server, gpus, step, as_json


def _positive(value: str, flag: str) -> int:

    if not value.isdigit() or int(value) < 1:
        raise UsageError(f"{flag}: {value!r} is not a positive number")
    return int(value)


def estimate_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    from harness.estimate import estimate_run
    from harness.pipeline import resolve_artifact

    from ._tables import estimate_table

    artifact = resolve_artifact(args.model)
    server, gpu_sizes, step, as_json = _estimate_words(args.words)
    drafter, projector = artifact.role_files("drafter"), artifact.role_files("projector")
    result = estimate_run(
        artifact.model,
        artifact.cmd or (),
        server,
        gpu_sizes,
        gpu_layers_step=step,
        drafter=drafter[0] if drafter else None,
        projector=projector[0] if projector else None,
        adapters=artifact.role_files("adapter"),
    )
    growth = result.prompt_cache_max
    if as_json:
        extra = {"machine": result.machine_text, "prompt_cache_max_bytes": growth}
        print(json.dumps([{**extra, **r.to_json()} for r in result.rows], indent=2))
        return 0
    console = Console()
    console.width = max(console.width, 180)  # a wide table: don't squeeze it into 80 columns
    console.print(f"machine: {result.machine_text}")
    console.print(estimate_table(list(result.rows)))
    if growth:
        console.print(
            f"run-time growth, not in RAM above: llama-server's prompt cache up to "
            f"{format_size(growth)} (--cache-ram; -cram 0 turns it off)"
        )
    for note in result.rows[0].notes:
        console.print(f"note: {note}")
    return 0


def init_command(args: argparse.Namespace) -> int:
    from harness.pipeline import init_model

    for path in init_model(Path(args.directory), args.source):
        print(f"wrote {path}")
    print(f"next: gguf-harness test {args.directory}")
    return 0


def diff_command(args: argparse.Namespace) -> int:
    from harness.pipeline import diff_models, resolve_artifact

    before, after = resolve_artifact(args.before), resolve_artifact(args.after)
    result = diff_models(before, after, (args.before, args.after))
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    if not result.changes:
        print(f"{args.before} and {args.after}: the same model")
        return 0
    for change in result.changes:
        delta = f"  {change.delta}" if change.delta else ""
        print(
            f"{printable(change.what)}: {printable(change.before or '(none)')}"
            f" -> {printable(change.after or '(none)')}{delta}"
        )
    return 0


def pull_command(args: argparse.Namespace) -> int:
    from harness import _progress
    from harness.distribution import RegistryOptions
    from harness.store import Store

    _progress.configure(quiet=args.quiet)
    model = Store().pull(
        args.reference,
        options=RegistryOptions(insecure=args.insecure),
        report=None if args.quiet else _say,
    )
    print(f"{args.reference} {model.id}")
    return 0


def list_command(args: argparse.Namespace) -> int:
    from harness.store import Store

    from ._tables import print_rows

    rows = Store().rows()
    if args.json:
        print(json.dumps([asdict(row) for row in rows], indent=2))
        return 0
    print_rows(rows)
    return 0


def remove_command(args: argparse.Namespace) -> int:
    from harness.store import Store

    store = Store()
    for reference in args.references:
        collected = store.remove(reference)
        print(f"removed {', '.join(collected.references)}; freed {format_size(collected.freed)}")
    return 0


def quality_command(args: argparse.Namespace) -> int:
    from ._quality import quality_command as measure

    return measure(args)


def matrix_command(args: argparse.Namespace) -> int:
    from harness.expect import matrix

    print(json.dumps(matrix(args.paths or ["."])))
    return 0


def action_command(args: argparse.Namespace) -> int:
    from harness.action import run_action

    reports = args.report or [os.environ.get("GGUF_HARNESS_REPORT") or ""]
    if not all(reports):
        raise UsageError("action: give the report file (or set GGUF_HARNESS_REPORT)")
    return run_action(reports, os.environ)


def toolchain_command(args: argparse.Namespace) -> int:
    from harness.toolchain import build_programs, link_python_library, toolchain_report

    programs = None
    if args.build:
        programs = build_programs(progress=_say)
        link_python_library(programs)
    report = toolchain_report(programs)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return 0
    print(f"llama.cpp {report.commit[:7]} (b{report.build_number}), {report.backend} build")
    print(f"  built in {report.build_seconds:.0f} s into {report.build_dir}")
    print(f"  in-process library (llama-cpp-python {report.llama_cpp_python}): {report.library}")
    for info in report.programs:
        print(f"  {info.name:<17} {info.version:<28} {info.path}")
    print(f"  converter         {report.converter or 'not unpacked yet'}")
    return 0


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def test_command(args: argparse.Namespace) -> int:
    import subprocess  # here only: a select/threading import that inspect does not need

    # A fresh interpreter: pytest must import the plugin (and rewrite asserts) itself, which it
    # cannot do for modules this process has already imported.
    command = [sys.executable, "-m", "pytest", *args.pytest_args]
    if {"-h", "--help"} & set(args.pytest_args):
        usage = subprocess.run(command, capture_output=True, text=True, check=False).stdout
        lines = usage.splitlines()
        start = next((i for i, line in enumerate(lines) if line == "gguf-harness:"), None)
        if start is not None:
            end = next((i for i in range(start + 1, len(lines)) if not lines[i]), len(lines))
            print("usage: gguf-harness test [PATH ...] [PYTEST ARG ...]\n")
            print("\n".join(lines[start:end]))
            print("\nEvery other argument is pytest's (python -m pytest --help lists them all).")
            return 0
    from ._stop import wait_passing

    # Signals are passed on: a stop asked during --publish lets pytest end its uploads between
    # chunks, with their sessions journaled for the next run.
    return wait_passing(subprocess.Popen(command))
