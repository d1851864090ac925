"""The `gguf-harness` command: argument parsing here, each command in _commands (imported only
once one was chosen, so `--help` loads none of the chain), tables in _tables."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from harness import __version__
from harness.errors import HarnessError

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
        args = argparse.Namespace(run="test", pytest_args=words[1:])
    else:
        args = parser.parse_args(words)
    if server_args:
        args.server_args = [*args.server_args, *server_args]
    from harness.cli._stop import Interrupted

    try:
        from harness.cli import _commands

        return int(getattr(_commands, f"{args.run}_command")(args))
    except HarnessError as error:
        print(f"gguf-harness: error: {error}", file=sys.stderr)
        return 1
    except Interrupted as stop:  # a second SIGINT or SIGTERM during a push
        print("gguf-harness: stopped at once", file=sys.stderr)
        return stop.status
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
        help="what a model is: a GGUF file (header only, fast), an OCI layout DIR[:TAG] or a"
        " model directory (its GGUF's facts); a stored model REF (a summary; --json: its config)",
    )
    inspect.add_argument("files", nargs="+", metavar="FILE|REF")
    inspect.add_argument(
        "--json", action="store_true", help="GGUF facts as JSON; for a REF, its full image config"
    )
    inspect.set_defaults(run="inspect")

    check = commands.add_parser("validate", help="check model.yaml files against the schema")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.set_defaults(run="validate")

    lint = commands.add_parser("lint", help="check Packerfiles: every problem, with file:line:col")
    lint.add_argument("paths", nargs="*", default=["."], metavar="FILE|DIR")
    lint.set_defaults(run="lint")

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
    build.add_argument("--compression", choices=("gzip", "zstd", "none"), default="none")
    build.add_argument(
        "--builder",
        choices=("native", "buildx"),
        help="native (default) or Docker BuildKit with the gguf-packer frontend",
    )
    build.add_argument("--frontend", metavar="IMAGE", help="the BuildKit frontend for buildx")
    build.add_argument(
        "--buildx-builder",
        metavar="NAME",
        help="a named buildx builder, e.g. a remote BuildKit (docker buildx create --driver"
        " remote); implies --builder buildx",
    )
    build.set_defaults(run="build")

    run = commands.add_parser(
        "run", help="serve an image (OCI layout DIR[:TAG]) or GGUF with llama.cpp, as its Cmd says"
    )
    run.add_argument("image", metavar="IMAGE")
    run.add_argument("--by", metavar="RUNNER", help="llama-server, llama-cpp-python or docker")
    run.add_argument("--port", type=int, default=8080)
    run.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    run.add_argument("server_args", nargs="*", metavar="-- SERVER ARG")
    run.set_defaults(run="run")

    ask = commands.add_parser("smoke", help="ask a served image one question")
    ask.add_argument("image", metavar="IMAGE")
    ask.add_argument("--prompt", required=True)
    ask.add_argument("--by", metavar="RUNNER")
    ask.add_argument("--max-tokens", type=int, default=128)
    ask.add_argument("server_args", nargs="*", metavar="-- SERVER ARG")
    ask.set_defaults(run="smoke")

    cells = commands.add_parser("matrix", help="JSON for a GitHub strategy.matrix over models")
    cells.add_argument("paths", nargs="*", metavar="PATH")
    cells.set_defaults(run="matrix")

    action = commands.add_parser(
        "action", help="GitHub: job summary, annotations, outputs, check run, PR comment"
    )
    action.add_argument(
        "report",
        nargs="*",
        metavar="REPORT",
        help="--harness-report files (several: one per matrix cell, read as one run)",
    )
    action.set_defaults(run="action")

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
    est.set_defaults(run="estimate")

    init = commands.add_parser(
        "init",
        help="a model directory (Packerfile, model.yaml of its own facts) for an existing GGUF,"
        " OCI layout DIR[:TAG] or stored model REF",
    )
    init.add_argument("directory", metavar="DIR")
    init.add_argument("--from", dest="source", required=True, metavar="GGUF|IMAGE|REF")
    init.set_defaults(run="init")

    diff = commands.add_parser(
        "diff",
        help="what changed between two builds: size, BPW, tensor types, metadata, labels, RAM",
    )
    diff.add_argument("before", metavar="A", help="a GGUF, OCI layout, model directory or REF")
    diff.add_argument("after", metavar="B")
    diff.add_argument("--json", action="store_true")
    diff.set_defaults(run="diff")

    quality = commands.add_parser(
        "quality",
        help="how much quantization cost: KL divergence, PPL ratio and top-token agreement"
        " against a reference (llama-perplexity), or embedding cosines",
    )
    quality.add_argument("model", metavar="MODEL", help="a GGUF, OCI layout, model dir or REF")
    quality.add_argument("--reference", required=True, metavar="R", help="the same forms")
    quality.add_argument("--corpus", metavar="FILE", help="text (default: the harness's own)")
    quality.add_argument("-c", "--ctx-size", type=int, default=512, help="tokens per chunk")
    quality.add_argument("--chunks", type=int, default=None, help="chunks to read (default all)")
    quality.add_argument("--kind", choices=("perplexity", "embedding"), default="perplexity")
    quality.add_argument("--json", action="store_true", help="every statistic, as JSON")
    quality.set_defaults(run="quality")

    push = commands.add_parser("push", help="push an OCI layout to a registry")
    push.add_argument("layout", metavar="DIR[:TAG]")
    push.add_argument("reference", metavar="REF", help="e.g. 127.0.0.1:5000/smollm2:q4")
    push.add_argument("--insecure", action="store_true", help="plain HTTP or unverified TLS")
    push.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    push.add_argument(
        "--chunk-size",
        metavar="SIZE",
        help="bytes per upload request (default 64MiB): what a stop waits for and a broken"
        " connection resends",
    )
    push.set_defaults(run="push")

    pull = commands.add_parser("pull", help="pull a model image into the local store")
    pull.add_argument("reference", metavar="REF")
    pull.add_argument("--insecure", action="store_true", help="plain HTTP or unverified TLS")
    pull.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    pull.set_defaults(run="pull")

    listing = commands.add_parser("list", help="models in the local store")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run="list")

    remove = commands.add_parser("remove", help="remove a model from the store (by REF or ID)")
    remove.add_argument("references", nargs="+", metavar="REF|ID")
    remove.set_defaults(run="remove")

    tools = commands.add_parser(
        "toolchain", help="the pinned llama.cpp: commit, build, programs, converter"
    )
    tools.add_argument("--build", action="store_true", help="compile it now unless cached")
    tools.add_argument("--json", action="store_true")
    tools.set_defaults(run="toolchain")

    test = commands.add_parser(
        "test",
        help="run every model's checks with pytest (extra arguments go to pytest)",
        description="Runs pytest with the gguf-harness plugin; exit codes are pytest's.",
        add_help=False,  # --help goes to _test: the plugin's own options, then pytest's
    )
    test.add_argument("pytest_args", nargs=argparse.REMAINDER, metavar="[PATH] [PYTEST ARG]")
    test.set_defaults(run="test")
    return parser


if __name__ == "__main__":
    sys.exit(main())
