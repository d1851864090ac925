"""Text to a checked Packerfile: every problem of the file at once, or the records."""

from __future__ import annotations

from pathlib import PurePath

from harness.errors import Location, PackerfileError, PackerfileWarning
from harness.packerfile._checks import check, check_model, literal
from harness.packerfile._expand_records import syntax_check
from harness.packerfile._instructions import build
from harness.packerfile._lexer import lex
from harness.packerfile._problems import Sink, raise_problems
from harness.packerfile._records import (
    Arg,
    Cmd,
    Convert,
    Copy,
    Directive,
    From,
    Instruction,
    Packerfile,
    Quantize,
    Stage,
)
from harness.packerfile._resolve import Resolver
from harness.packerfile._sources import names_packer_frontend

__all__ = ["is_packerfile_name", "parse"]


def is_packerfile_name(path: str) -> bool:
    """``GGUFPackerfile`` (any case, any suffix such as ``GGUFPackerfile.lora``) or
    ``*.ggufpackerfile``; any other file must declare the gguf-packer syntax."""
    name = PurePath(path).name.lower()
    return name.startswith("ggufpackerfile") or name.endswith(".ggufpackerfile")


def _require_frontend(path: str, syntax: Directive | None, sink: Sink) -> None:
    name = PurePath(path).name
    if is_packerfile_name(path):
        if syntax is not None and not names_packer_frontend(syntax.value):
            sink.warn(
                f"the syntax directive names {syntax.value!r}, not a gguf-packer frontend: "
                "docker build would read this file as a plain Dockerfile",
                syntax.location,
                "syntax-frontend",
            )
        return
    if syntax is None:
        raise PackerfileError(
            f"{name} is not a Packerfile: a file not named GGUFPackerfile needs "
            "'# syntax=gpustack/gguf-packer:latest' as its first line",
            Location(path, 1, 1),
            code="not-packerfile",
        )
    if not names_packer_frontend(syntax.value):
        raise PackerfileError(
            f"{name} is not a Packerfile: its syntax directive names {syntax.value!r}, "
            "not a gguf-packer frontend",
            syntax.location,
            code="not-packerfile",
        )


def _stages(records: list[Instruction | From], sink: Sink) -> tuple[list[Arg], list[Stage]]:
    global_args: list[Arg] = []
    heads: list[tuple[From, list[Instruction]]] = []
    for record in records:
        if isinstance(record, From):
            heads.append((record, []))
        elif heads:
            heads[-1][1].append(record)
        elif isinstance(record, Arg):
            global_args.append(record)
        else:
            sink.error(
                f"{record.keyword.upper()} comes before the first FROM: only ARG may",
                record.location,
                "before-from",
            )
    stages = [
        Stage(
            index=i,
            name=head.name,
            from_=head,
            instructions=tuple(body),
            location=head.location,
        )
        for i, (head, body) in enumerate(heads)
    ]
    return global_args, stages


def _check_stages(stages: list[Stage], sink: Sink) -> None:
    first: dict[str, Stage] = {}
    for stage in stages:
        if stage.name is None:
            continue
        if stage.name in first:
            sink.error(
                f"duplicate stage name {stage.name!r}: stage names must be unique (first "
                f"defined at line {first[stage.name].location.line})",
                stage.from_.where("name"),
                "stage-duplicate",
            )
        else:
            first[stage.name] = stage
    resolver = Resolver(stages, sink)
    for stage in stages:
        image = literal(stage.from_.image, final=False)
        if stage.from_.image and image is not None:
            resolver.resolve_base(image, stage, stage.from_.where("image"))
        for record in stage.instructions:
            if isinstance(record, Copy | Convert | Quantize):
                value = literal(record.from_, final=False)
                if value:
                    resolver.resolve_from(
                        value, stage, record.keyword.upper(), record.where("flag:from")
                    )
        cmds = [r for r in stage.instructions if isinstance(r, Cmd)]
        for cmd in cmds[:-1]:
            sink.warn(
                f"only the last CMD of a stage takes effect: this one is overridden at line "
                f"{cmds[-1].location.line}",
                cmd.location,
                "cmd-multiple",
            )
        if cmds:
            check_model(cmds[-1], sink)


#: The longest line BuildKit reads, in bytes of UTF-8 without the newline: its line scanner
#: holds 64 KiB, the newline included, and refuses a line that does not fit.
MAX_LINE_BYTES = (64 << 10) - 1


def parse(text: str, path: str = "GGUFPackerfile") -> Packerfile:
    """Read a Packerfile's text: syntax, flags and every check that needs no build args.

    All problems are collected; one raises as a PackerfileError, several as PackerfileErrors
    (ordered by line). A file not named GGUFPackerfile must carry a ``# syntax=`` directive
    naming a gguf-packer frontend, else it is refused at once as not a Packerfile.
    """
    for number, line in enumerate(text.split("\n"), 1):
        # A character is 4 bytes at most: only a line long in characters needs encoding.
        size = len(line.encode("utf-8", "surrogatepass")) if len(line) > MAX_LINE_BYTES // 4 else 0
        if size > MAX_LINE_BYTES:
            raise PackerfileError(
                f"this line is {size} bytes: dockerfile line greater than max allowed size of "
                f"{MAX_LINE_BYTES} (BuildKit's limit, in bytes of UTF-8)",
                Location(path, number, 1),
                code="line-length",
            )
    try:
        return _parse(text, path)
    except RecursionError:
        raise PackerfileError(
            "nested too deeply (variable defaults within defaults, or brackets)",
            Location(path),
            code="nesting",
        ) from None


def _parse(text: str, path: str) -> Packerfile:
    lexed = lex(text, path)
    sink = Sink(path, lexed.escape)
    syntax = next((d for d in lexed.directives if d.name == "syntax"), None)
    _require_frontend(path, syntax, sink)
    sink.problems.extend(lexed.problems)
    records: list[Instruction | From] = []
    for raw in lexed.instructions:
        records.extend(build(raw, sink))
    for record in records:
        check(record, sink, final=False)
        syntax_check(record, lexed.escape, sink)
    global_args, stages = _stages(records, sink)
    if not lexed.instructions:
        sink.error(
            "the file has no instructions: a Packerfile needs at least a FROM",
            Location(path, 1, 1),
            "empty-file",
        )
    elif not stages:
        first = lexed.instructions[0]
        sink.error(
            "the file has no FROM: a Packerfile needs at least one stage",
            Location(path, first.line, first.col),
            "no-stage",
        )
    _check_stages(stages, sink)
    raise_problems(sink.problems)
    return Packerfile(
        path=path,
        escape=lexed.escape,
        syntax=syntax.value if syntax else None,
        directives=lexed.directives,
        global_args=tuple(global_args),
        stages=tuple(stages),
        warnings=tuple(
            sorted(
                (p for p in sink.problems if isinstance(p, PackerfileWarning)),
                key=PackerfileError.sort_key,
            )
        ),
    )
