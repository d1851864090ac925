"""Stage resolution: expand each stage's variables, resolve FROM and --from, pick the lineage.

Variables, as the seed defines them: the ARGs before the first FROM are global and visible in
every stage without re-declaring (unlike Dockerfile); a build arg overrides the default of any
ARG that declares its name; a stage ARG without default takes the global value, if any.
FROM (image and --platform) sees the global ARGs only. BuildKit's platform args
(TARGETPLATFORM, BUILDARCH...) are visible everywhere, but only when the caller passes them
as build args: plan() does not guess the build machine.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType

from harness.errors import Location, PackerfileError, PackerfileWarning
from harness.packerfile._checks import check, check_model
from harness.packerfile._expand_records import Expansion, expand_instruction
from harness.packerfile._problems import Sink, raise_problems
from harness.packerfile._records import (
    Arg,
    BuildPlan,
    Convert,
    Copy,
    Instruction,
    Packerfile,
    Quantize,
    Stage,
    StageRef,
)
from harness.packerfile._resolve import Resolver

__all__ = ["AUTOMATIC_ARGS", "check_all", "plan"]

_NO_ARGS: Mapping[str, str] = MappingProxyType({})
AUTOMATIC_ARGS = frozenset(
    {
        "TARGETPLATFORM",
        "TARGETOS",
        "TARGETARCH",
        "TARGETVARIANT",
        "BUILDPLATFORM",
        "BUILDOS",
        "BUILDARCH",
        "BUILDVARIANT",
    }
)


class _Planner:
    def __init__(self, pf: Packerfile, build_args: Mapping[str, str], sink: Sink) -> None:
        self.pf = pf
        self.build_args = build_args
        self.sink = sink
        self.resolver = Resolver(pf.stages, sink)
        self.declared: set[str] = set()
        self.expanded: dict[int, Stage] = {}
        # BuildKit's automatic platform args: visible everywhere when the builder passes them.
        self.global_env: dict[str, str] = {
            k: v for k, v in build_args.items() if k in AUTOMATIC_ARGS
        }
        self.declared.update(self.global_env)
        self.global_args = tuple(
            self._arg(a, Expansion(sink, pf.escape, self.global_env), self.global_env, {})
            for a in pf.global_args
        )

    def _arg(
        self, arg: Arg, x: Expansion, env: dict[str, str], inherited: Mapping[str, str]
    ) -> Arg:
        self.declared.add(arg.name)
        default = arg.default
        if arg.name in self.build_args:
            value: str | None = self.build_args[arg.name]
        elif default is not None:
            default = x.word(default, arg.location)
            value = default
        else:
            value = inherited.get(arg.name)
        if value is not None:
            env[arg.name] = value
        shown = arg.name if value is None else f"{arg.name}={value}"
        return replace(arg, default=default, value=value, created_by=f"{arg.keyword} {shown}")

    def _with_ref(self, record: Instruction, stage: Stage) -> Instruction:
        if not isinstance(record, Copy | Convert | Quantize):
            return record
        keyword = record.keyword.upper()
        if record.from_ is None:
            ref: StageRef | None = (
                StageRef("context", "context")
                if isinstance(record, Copy)
                else StageRef("stage", stage.display_name, stage.index)
            )
        else:
            ref = self.resolver.resolve_from(
                record.from_, stage, keyword, record.where("flag:from")
            )
        return replace(record, from_ref=ref)

    def expand_stage(self, stage: Stage) -> Stage:
        outer = Expansion(self.sink, self.pf.escape, self.global_env)
        head = stage.from_
        image = outer.word(head.image, head.where("image"))
        from_ = replace(
            head,
            image=image,
            platform=outer.optional(head.platform, head.where("flag:platform")),
            created_by=outer.history(head.original),
        )
        base_ref = self.resolver.resolve_base(image, stage, head.where("image"))
        env = dict(self.global_env)
        x = Expansion(self.sink, self.pf.escape, env)
        out: list[Instruction] = []
        for record in stage.instructions:
            if isinstance(record, Arg):
                out.append(self._arg(record, x, env, self.global_env))
                continue
            expanded = self._with_ref(expand_instruction(record, x), stage)
            check(expanded, self.sink, final=True)
            out.append(expanded)
        planned = replace(stage, from_=from_, instructions=tuple(out), base_ref=base_ref)
        if planned.cmd is not None:
            check_model(planned.cmd, self.sink)
        return planned

    def lineage(self, target: int) -> tuple[Stage, ...]:
        todo = [target]
        while todo:
            index = todo.pop()
            if index in self.expanded:
                continue
            stage = self.expand_stage(self.pf.stages[index])
            self.expanded[index] = stage
            todo.extend(_dependencies(stage))
        # Every dependency has a smaller index, so index order is a build order.
        return tuple(self.expanded[i] for i in sorted(self.expanded))

    def target(self, name: str | None) -> Stage:
        if name is None:
            return self.pf.stages[-1]
        named = self.resolver.by_name.get(name.lower())
        if named is not None:
            return named
        close = difflib.get_close_matches(name.lower(), list(self.resolver.by_name), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        known = ", ".join(self.resolver.by_name) or "none"
        raise PackerfileError(
            f"target stage {name!r} could not be found{hint}; named stages: {known}",
            Location(self.pf.path),
            code="unknown-target",
        )

    def check_target(self, target: Stage) -> None:
        stage: Stage | None = target
        root: StageRef | None = None
        while stage is not None:
            if stage.cmd is not None:
                return
            root = stage.base_ref
            if root is None or root.kind != "stage" or root.index is None:
                break
            stage = self.expanded.get(root.index)
        if root is not None and root.kind == "scratch":
            self.sink.warn(
                f"stage {target.display_name!r} has no CMD and builds on scratch: nothing points "
                'out the main model (add CMD ["-m", "<file>.gguf"])',
                target.from_.location,
                "no-model",
            )

    def unused_build_args(self) -> None:
        unused = sorted(set(self.build_args) - self.declared)
        if unused:
            self.sink.warn(
                f"build arg{'s' if len(unused) > 1 else ''} {', '.join(unused)} not consumed: "
                "no ARG declares them in the global scope or in the stages built",
                Location(self.pf.path),
                "unused-build-arg",
            )


def _dependencies(stage: Stage) -> list[int]:
    refs = [stage.base_ref] + [
        i.from_ref for i in stage.instructions if isinstance(i, Copy | Convert | Quantize)
    ]
    return [
        r.index
        for r in refs
        if r is not None and r.kind == "stage" and r.index is not None and r.index != stage.index
    ]


def _merge_warnings(*groups: Sequence[PackerfileError]) -> tuple[PackerfileWarning, ...]:
    seen: set[tuple[str, Location | None, str]] = set()
    out: list[PackerfileWarning] = []
    for group in groups:
        for problem in group:
            key = (problem.code, problem.location, problem.message)
            if isinstance(problem, PackerfileWarning) and key not in seen:
                seen.add(key)
                out.append(problem)
    return tuple(sorted(out, key=PackerfileError.sort_key))


def plan(
    pf: Packerfile,
    *,
    build_args: Mapping[str, str] = _NO_ARGS,
    target: str | None = None,
) -> BuildPlan:
    """Expand and resolve what building ``target`` (default: the last stage) takes.

    Raises PackerfileError (PackerfileErrors for several) on an unknown target, a ``--from``
    naming a later stage or its own, a value that is invalid once expanded (a type, a checksum,
    a CMD without its model...). Warnings (undefined variables, unused build args) come back
    in ``BuildPlan.warnings``.
    """
    sink = Sink(pf.path)
    planner = _Planner(pf, build_args, sink)
    try:
        chosen = planner.target(target)
        stages = planner.lineage(chosen.index)
    except RecursionError:
        raise PackerfileError(
            "nested too deeply (variable defaults within defaults)",
            Location(pf.path),
            code="nesting",
        ) from None
    planner.check_target(stages[-1])
    planner.unused_build_args()
    raise_problems(sink.problems)
    return BuildPlan(
        packerfile=pf,
        stages=stages,
        args=tuple((a.name, a.value) for a in planner.global_args if a.value is not None),
        build_args=tuple(sorted(build_args.items())),
        warnings=_merge_warnings(pf.warnings, sink.problems),
    )


def check_all(pf: Packerfile, build_args: Mapping[str, str] = _NO_ARGS) -> list[PackerfileError]:
    """Every problem plan() would find in any stage with ``build_args`` over the defaults
    (what lint reports, once per set of args a model.yaml builds with)."""
    sink = Sink(pf.path)
    planner = _Planner(pf, build_args, sink)
    for stage in pf.stages:
        planner.expanded[stage.index] = planner.expand_stage(stage)
    planner.check_target(planner.expanded[pf.stages[-1].index])
    return list(sink.problems)
