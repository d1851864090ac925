"""The `gguf-harness` command: argument parsing and presentation over the core, nothing more."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harness import __version__
from harness.action import matrix, run_action
from harness.builder import BuildOptions, build_with
from harness.distribution import RegistryOptions, push_layout
from harness.errors import HarnessError, UsageError, printable
from harness.estimate import Estimate, estimate_run
from harness.expect import Subject, validate
from harness.gguf import GGUFFacts, read_facts
from harness.packerfile import lint
from harness.pipeline import Artifact, artifact_of_layout
from harness.smoke import SmokeCheck, dry_run, server_command, smoke, start
from harness.store import ModelRow, ModelSummary, Store
from harness.toolchain import build_programs, link_python_library, toolchain_report
from harness.units import format_count, format_size, parse_size

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    words = list(sys.argv[1:] if argv is None else argv)
    # `run IMAGE -- ARGS`: what follows `--` goes to the server untouched, flags included.
    server_args: list[str] = []
    if words[:1] in (["run"], ["smoke"]) and "--" in words:
        cut = words.index("--")
        words, server_args = words[:cut], words[cut + 1 :]
    if words[:1] == ["test"]:
        # everything after `test` is pytest's, --help included (argparse would take options)
        args = argparse.Namespace(run=_test, pytest_args=words[1:])
    else:
        args = parser.parse_args(words)
    if server_args:
        args.server_args = [*args.server_args, *server_args]
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

    inspect = commands.add_parser(
        "inspect",
        help="what GGUF files are (header only, fast); for a stored model REF, its image config",
    )
    inspect.add_argument("files", nargs="+", metavar="FILE|REF")
    inspect.add_argument(
        "--json", action="store_true", help="GGUF facts as JSON; for a REF, its full image config"
    )
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
    build.add_argument(
        "--builder",
        choices=("native", "buildx"),
        help="native (default) or Docker BuildKit with the gguf-packer frontend",
    )
    build.add_argument("--frontend", metavar="IMAGE", help="the BuildKit frontend for buildx")
    build.set_defaults(run=_build)

    run = commands.add_parser(
        "run", help="serve an image (OCI layout DIR[:TAG]) or GGUF with llama.cpp, as its Cmd says"
    )
    run.add_argument("image", metavar="IMAGE")
    run.add_argument("--by", metavar="RUNNER", help="llama-server, llama-cpp-python or docker")
    run.add_argument("--port", type=int, default=8080)
    run.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    run.add_argument("server_args", nargs="*", metavar="-- SERVER ARG")
    run.set_defaults(run=_run)

    ask = commands.add_parser("smoke", help="ask a served image one question")
    ask.add_argument("image", metavar="IMAGE")
    ask.add_argument("--prompt", required=True)
    ask.add_argument("--by", metavar="RUNNER")
    ask.add_argument("--max-tokens", type=int, default=128)
    ask.add_argument("server_args", nargs="*", metavar="-- SERVER ARG")
    ask.set_defaults(run=_smoke)

    cells = commands.add_parser("matrix", help="JSON for a GitHub strategy.matrix over models")
    cells.add_argument("paths", nargs="*", metavar="PATH")
    cells.set_defaults(run=_matrix)

    action = commands.add_parser(
        "action", help="GitHub: job summary, annotations, outputs, check run, PR comment"
    )
    action.add_argument("report", nargs="?", metavar="REPORT", help="a --harness-report file")
    action.set_defaults(run=_action)

    est = commands.add_parser(
        "estimate",
        help="RAM and VRAM llama-server needs for a GGUF or an image (OCI layout)",
        description=(
            "MODEL, then llama-server's own arguments exactly as llama-server reads them "
            "(-c 8192 -fa off -np 4 -ctk q8_0 -ngl 20 -ts 3,1 -dev none ...; the image's Cmd "
            "gives the defaults), mixed with the harness's: --gpu SIZE (one per GPU, e.g. "
            "--gpu 24GiB; none: a CPU-only machine), --gpu-layers-step N, --json."
        ),
    )
    est.add_argument("model", metavar="FILE|IMAGE", help="a GGUF file, or an OCI layout DIR[:TAG]")
    est.add_argument("words", nargs=argparse.REMAINDER, metavar="ARG")
    est.set_defaults(run=_estimate)

    push = commands.add_parser("push", help="push an OCI layout to a registry")
    push.add_argument("layout", metavar="DIR[:TAG]")
    push.add_argument("reference", metavar="REF", help="e.g. 127.0.0.1:5000/smollm2:q4")
    push.add_argument("--insecure", action="store_true", help="plain HTTP or unverified TLS")
    push.set_defaults(run=_push)

    pull = commands.add_parser("pull", help="pull a model image into the local store")
    pull.add_argument("reference", metavar="REF")
    pull.add_argument("--insecure", action="store_true", help="plain HTTP or unverified TLS")
    pull.set_defaults(run=_pull)

    listing = commands.add_parser("list", help="models in the local store")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=_list)

    remove = commands.add_parser("remove", help="remove a model from the store (by REF or ID)")
    remove.add_argument("references", nargs="+", metavar="REF|ID")
    remove.set_defaults(run=_remove)

    tools = commands.add_parser(
        "toolchain", help="the pinned llama.cpp: commit, build, programs, converter"
    )
    tools.add_argument("--build", action="store_true", help="compile it now unless cached")
    tools.add_argument("--json", action="store_true")
    tools.set_defaults(run=_toolchain)

    test = commands.add_parser(
        "test",
        help="run every model's checks with pytest (extra arguments go to pytest)",
        description="Runs pytest with the gguf-harness plugin; exit codes are pytest's.",
        add_help=False,  # --help goes to _test: the plugin's own options, then pytest's
    )
    test.add_argument("pytest_args", nargs=argparse.REMAINDER, metavar="[PATH] [PYTEST ARG]")
    test.set_defaults(run=_test)
    return parser


def _inspect(args: argparse.Namespace) -> int:
    if not any(Path(name).exists() for name in args.files):
        # Not files: stored models. A summary to read; --json: the full image config.
        store = Store()
        if args.json:
            configs = [store.inspect(ref) for ref in args.files]
            print(json.dumps(configs[0] if len(configs) == 1 else configs, indent=2))
            return 0
        for ref in args.files:
            _print_summary(store.summary(ref))
        return 0
    facts = [read_facts(path) for path in args.files]
    if args.json:
        print(json.dumps([f.to_json() for f in facts], indent=2))
        return 0
    Console().print(_facts_table(facts))
    return 0


def _print_summary(summary: ModelSummary) -> None:
    row = summary.row
    fields = [
        ("NAME", f"{row.name}:{row.tag}"), ("ID", row.short_id), ("FORMAT", row.format),
        ("ARCH", row.arch), ("PARAMS", row.params), ("BPW", row.bpw), ("TYPE", row.type),
        ("SIZE", format_size(row.size)), ("CONTEXT", str(summary.context or "")),
        ("LAYERS", str(summary.layers or "")), ("USAGE", row.usage), ("CREATED", row.created),
    ]  # fmt: skip
    for key, value in fields:
        print(f"{key:<8} {printable(value)}")
    if summary.labels:
        print("LABELS")
        for key, value in sorted(summary.labels.items()):
            print(f"  {printable(key)}={printable(value)}")


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
    result = build_with(
        options,
        builder=args.builder,
        frontend=args.frontend,
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


def _estimate(args: argparse.Namespace) -> int:
    path = Path(args.model)
    if path.is_file():
        artifact = Artifact(Subject(read_facts(path), None), None, {})
    else:
        directory, _, tag = (
            args.model.rpartition(":") if ":" in args.model else (args.model, "", "")
        )
        artifact = artifact_of_layout(Path(directory), tag or None)
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
    console.print(_estimate_table(list(result.rows)))
    if growth:
        console.print(
            f"run-time growth, not in RAM above: llama-server's prompt cache up to "
            f"{format_size(growth)} (--cache-ram; -cram 0 turns it off)"
        )
    for note in result.rows[0].notes:
        console.print(f"note: {note}")
    return 0


def _estimate_table(rows: list[Estimate]) -> Table:
    table = Table(header_style="bold")
    head = ["ARCH", "CONTEXT\nSIZE", "BATCH SIZE\n(L / P)", "FLASH\nATTENTION", "MMAP\nLOAD"]
    head += ["EMBEDDING\nONLY", "DISTRIBUTABLE", "OFFLOAD\nLAYERS", "FULL\nOFFLOADED"]
    head += ["RAM\nUMA", "RAM\nNONUMA"]
    for i in range(len(rows[0].devices)):
        head += [f"VRAM {i}\nLAYERS", f"VRAM {i}\nUMA", f"VRAM {i}\nNONUMA"]
    for column in head:
        table.add_column(column, justify="right")

    def yes(flag: bool) -> str:
        return "Yes" if flag else "No"

    for e in rows:
        row = [
            e.arch,
            str(e.context_size),
            f"{e.batch_size} / {e.ubatch_size}",
            "Enabled" if e.flash_attn else "Disabled",
            "Enabled" if e.mmap else "Disabled",
            yes(e.embedding_only),
            "Supported" if e.distributable else "Not Supported",
            f"{e.offload_layers} of {e.total_layers}",
            yes(e.full_offload),
            format_size(e.ram_uma),
            format_size(e.ram),
        ]
        for i, device in enumerate(e.devices):
            row += [str(device.layers), format_size(e.vram_uma(i)), format_size(device.total)]
        table.add_row(*row)
    return table


def _push(args: argparse.Namespace) -> int:
    directory, colon, tag = args.layout.rpartition(":")
    if not colon or "/" in tag:
        directory, tag = args.layout, ""
    result = push_layout(
        Path(directory),
        args.reference,
        tag=tag or None,
        options=RegistryOptions(insecure=args.insecure),
        report=_say,
    )
    state = "pushed" if result.changed else "unchanged"
    print(f"{result.reference} {result.descriptor.digest} ({state}, {result.bytes_sent} bytes)")
    return 0


def _pull(args: argparse.Namespace) -> int:
    model = Store().pull(
        args.reference, options=RegistryOptions(insecure=args.insecure), report=_say
    )
    print(f"{args.reference} {model.id}")
    return 0


def _list(args: argparse.Namespace) -> int:
    rows = Store().rows()
    if args.json:
        print(json.dumps([asdict(row) for row in rows], indent=2))
        return 0
    table = Table(box=None, header_style="bold")
    for column in ModelRow.COLUMNS:
        table.add_column(column)
    for r in rows:
        cells = (r.name, r.tag, r.short_id, r.arch, r.params, r.bpw, r.type, r.usage, r.created)
        table.add_row(*cells, format_size(r.size))
    Console(width=200).print(table)
    return 0


def _remove(args: argparse.Namespace) -> int:
    store = Store()
    for reference in args.references:
        collected = store.remove(reference)
        print(f"removed {', '.join(collected.references)}; freed {format_size(collected.freed)}")
    return 0


def _run(args: argparse.Namespace) -> int:
    command = server_command(args.image, args.server_args)
    if args.dry_run:
        print(dry_run(command, args.by, port=args.port).command_line)
        return 0
    # A signal while the server loads stops it too (start() cleans up on any exception); once it
    # serves, Server.serve passes each signal on to it and waits.
    previous = {signum: signal.signal(signum, _interrupted) for signum in _STOP_SIGNALS}
    try:
        with start(command, args.by, port=args.port) as server:
            print(f"serving {args.image} at {server.url} (Ctrl-C stops it)", file=sys.stderr)
            return server.serve()
    except _Interrupted as stop:
        return 128 + stop.signum
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class _Interrupted(BaseException):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _interrupted(signum: int, _frame: object) -> None:
    raise _Interrupted(signum)


def _smoke(args: argparse.Namespace) -> int:
    check = SmokeCheck.from_mapping(
        {"name": "prompt", "kind": "chat", "prompt": args.prompt, "max_tokens": args.max_tokens}
    )
    run = smoke(server_command(args.image, args.server_args), [check], args.by)
    (result,) = run.results
    print(result.text if result.text is not None else result.message)
    return 0 if result.passed else 1


def _matrix(args: argparse.Namespace) -> int:
    print(json.dumps(matrix(args.paths or ["."])))
    return 0


def _action(args: argparse.Namespace) -> int:
    report = args.report or os.environ.get("GGUF_HARNESS_REPORT")
    if not report:
        raise UsageError("action: give the report file (or set GGUF_HARNESS_REPORT)")
    return run_action(report, os.environ)


def _toolchain(args: argparse.Namespace) -> int:
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


def _test(args: argparse.Namespace) -> int:
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
    return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
