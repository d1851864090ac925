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
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType

from harness.errors import Location, PackerfileError, PackerfileWarning
from harness.packerfile._checks import check, check_model
from harness.packerfile._expand import ExpandError, expand_raw, expand_word
from harness.packerfile._instructions import cmd_history
from harness.packerfile._lexer import squeeze
from harness.packerfile._problems import Sink, raise_problems
from harness.packerfile._records import (
    Add,
    Arg,
    BuildPlan,
    Cat,
    Cmd,
    Convert,
    Copy,
    From,
    Heredoc,
    Instruction,
    Label,
    Packerfile,
    Quantize,
    Stage,
    StageRef,
)
from harness.packerfile._sources import is_image_reference

__all__ = ["AUTOMATIC_ARGS", "Resolver", "check_all", "plan", "syntax_check"]

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
_INDEX = re.compile(r"^[+-]?\d+$")


class _Expansion:
    """Expands fields against one environment, reporting problems at each field's location."""

    def __init__(
        self, sink: Sink, escape: str, env: Mapping[str, str], *, syntax_only: bool = False
    ) -> None:
        self.sink = sink
        self.escape = escape
        self.env = env
        self.syntax_only = syntax_only
        self._warned: set[tuple[str, Location]] = set()

    def _run(self, text: str, where: Location, raw: bool, escape: str) -> str:
        try:
            result = (expand_raw if raw else expand_word)(text, self.env, escape=escape)
        except ExpandError as err:
            if err.syntax or not self.syntax_only:
                self.sink.error(f"{err.message} in {text!r}", where, "expand")
            return text
        if not self.syntax_only:
            for name in result.undefined:
                if (name, where) not in self._warned:
                    self._warned.add((name, where))
                    self.sink.warn(
                        f"variable {name!r} is not defined here: it expands to an empty string",
                        where,
                        "undefined-variable",
                    )
        return result.value

    def word(self, text: str, where: Location) -> str:
        return self._run(text, where, False, self.escape)

    def raw(self, text: str, where: Location, escape: str | None = None) -> str:
        return self._run(text, where, True, escape or self.escape)

    def optional(self, text: str | None, where: Location) -> str | None:
        # An optional flag that expands to "" is not given: ARG IMATRIX= switches it off.
        return (self.word(text, where) or None) if text is not None else None

    def names(self, values: tuple[str, ...], where: Location) -> tuple[str, ...]:
        out: list[str] = []
        for value in values:
            out.extend(v for v in self.word(value, where).split(",") if v)
        return tuple(out)

    def heredoc(self, doc: Heredoc) -> Heredoc:
        if not doc.name:
            return replace(doc, content=self.word(doc.content, doc.location))
        if not doc.expand:
            return doc
        # Heredoc bodies escape with backslash whatever the escape directive says, as in Docker.
        return replace(doc, content=self.raw(doc.content, doc.location, "\\"))

    def history(self, original: str) -> str:
        text = squeeze(original, self.escape)
        try:
            return expand_raw(text, self.env, escape=self.escape).value
        except ExpandError:
            return text


def _expand_instruction(record: Instruction, x: _Expansion) -> Instruction:
    """A copy of ``record`` with every expandable field expanded (not ARG: see _Planner)."""
    w = record.where
    created_by = x.history(record.original)
    if isinstance(record, Add):
        return replace(
            record,
            created_by=created_by,
            sources=tuple(x.word(s, w(f"source:{i}")) for i, s in enumerate(record.sources)),
            dest=x.word(record.dest, w("dest")),
            checksum=x.optional(record.checksum, w("flag:checksum")),
            chown=x.optional(record.chown, w("flag:chown")),
            chmod=x.optional(record.chmod, w("flag:chmod")),
            exclude=tuple(x.word(e, w("flag:exclude")) for e in record.exclude),
            heredocs=tuple(x.heredoc(h) for h in record.heredocs),
        )
    if isinstance(record, Copy):
        return replace(
            record,
            created_by=created_by,
            from_=x.optional(record.from_, w("flag:from")),
            sources=tuple(x.word(s, w(f"source:{i}")) for i, s in enumerate(record.sources)),
            dest=x.word(record.dest, w("dest")),
            chown=x.optional(record.chown, w("flag:chown")),
            chmod=x.optional(record.chmod, w("flag:chmod")),
            exclude=tuple(x.word(e, w("flag:exclude")) for e in record.exclude),
            heredocs=tuple(x.heredoc(h) for h in record.heredocs),
        )
    if isinstance(record, Cat):
        parts = tuple(x.heredoc(p) for p in record.parts)
        return replace(
            record,
            created_by=created_by,
            parts=parts,
            content="".join(p.content for p in parts),
            dest=x.word(record.dest, w("dest")),
        )
    if isinstance(record, Convert):
        return replace(
            record,
            created_by=created_by,
            from_=x.optional(record.from_, w("flag:from")),
            type=x.word(record.type, w("flag:type")),
            cls=x.word(record.cls, w("flag:class")),
            base=x.optional(record.base, w("flag:base")),
            source=x.word(record.source, w("source")),
            dest=x.word(record.dest, w("dest")),
        )
    if isinstance(record, Quantize):
        return replace(
            record,
            created_by=created_by,
            from_=x.optional(record.from_, w("flag:from")),
            type=x.word(record.type, w("flag:type")),
            imatrix=x.optional(record.imatrix, w("flag:imatrix")),
            include_weights=x.names(record.include_weights, w("flag:include-weights")),
            exclude_weights=x.names(record.exclude_weights, w("flag:exclude-weights")),
            output_tensor_type=x.optional(record.output_tensor_type, w("flag:output-tensor-type")),
            token_embedding_type=x.optional(
                record.token_embedding_type, w("flag:token-embedding-type")
            ),
            source=x.word(record.source, w("source")),
            dest=x.word(record.dest, w("dest")),
        )
    if isinstance(record, Cmd):
        # JSON strings are not shell words: substitute variables, keep every quote.
        args = tuple(x.raw(a, w(f"arg:{i}")) for i, a in enumerate(record.args))
        return replace(record, created_by=cmd_history(record.keyword, args), args=args)
    if isinstance(record, Label):
        return replace(
            record,
            created_by=created_by,
            items=tuple(
                (x.word(k, w(f"key:{i}")), x.word(v, w(f"key:{i}")))
                for i, (k, v) in enumerate(record.items)
            ),
        )
    return record


def syntax_check(record: Instruction | From, escape: str, sink: Sink) -> None:
    """Report substitutions that can never work (``${}``, unclosed quotes), before any plan."""
    x = _Expansion(sink, escape, {}, syntax_only=True)
    if isinstance(record, From):
        x.word(record.image, record.where("image"))
        x.optional(record.platform, record.where("flag:platform"))
    elif isinstance(record, Arg):
        if record.default is not None:
            x.word(record.default, record.location)
    else:
        _expand_instruction(record, x)


class Resolver:
    """Resolves FROM bases and ``--from`` values against a file's stages."""

    def __init__(self, stages: Sequence[Stage], sink: Sink) -> None:
        self.stages = stages
        self.sink = sink
        self.by_name: dict[str, Stage] = {}
        for stage in stages:
            if stage.name and stage.name not in self.by_name:
                self.by_name[stage.name] = stage

    def _earlier(
        self, target: Stage, current: Stage, keyword: str, value: str, where: Location
    ) -> StageRef | None:
        if target.index == current.index:
            self.sink.error(
                f"circular dependency: {keyword} --from={value} names the stage it is in "
                f"({current.display_name})",
                where,
                "circular",
            )
            return None
        if target.index > current.index:
            self.sink.error(
                f"cannot use stage {target.display_name!r} in {keyword} --from: it needs to be "
                f"defined before the current stage {current.display_name!r} "
                f"(it is defined at line {target.location.line})",
                where,
                "from-later",
            )
            return None
        return StageRef("stage", target.display_name, target.index)

    def resolve_from(
        self, value: str, current: Stage, keyword: str, where: Location
    ) -> StageRef | None:
        """A number is a stage index, then a stage name, then ``context``, else an image."""
        if _INDEX.match(value):
            index = int(value)
            if not 0 <= index < len(self.stages):
                count = len(self.stages)
                self.sink.error(
                    f"invalid stage index {index} in {keyword} --from: the file has {count} "
                    f"stage{'s' if count != 1 else ''} (0 to {count - 1})",
                    where,
                    "stage-index",
                )
                return None
            return self._earlier(self.stages[index], current, keyword, value, where)
        named = self.by_name.get(value.lower())
        if named is not None:
            return self._earlier(named, current, keyword, value, where)
        if value == "context":
            return StageRef("context", "context")
        if value.lower() == "scratch":
            return StageRef("scratch", "scratch")
        if not is_image_reference(value):
            self.sink.error(
                f"{keyword} --from={value!r} names no stage and is not a valid image reference",
                where,
                "image-ref",
            )
            return None
        # A bare name close to a stage's is likely a typo; "org/image:tag" is surely an image.
        bare = not any(c in value for c in "/:@")
        close = difflib.get_close_matches(value.lower(), list(self.by_name), n=1, cutoff=0.6)
        if bare and close:
            self.sink.warn(
                f"{keyword} --from={value} is read as an image; did you mean stage {close[0]!r}?",
                where,
                "from-image",
            )
        return StageRef("image", value)

    def resolve_base(self, value: str, current: Stage, where: Location) -> StageRef | None:
        """An earlier stage's name, then ``scratch``, else an image."""
        if not value:
            self.sink.error(
                "FROM needs a base: an image, an earlier stage's name or scratch "
                f"(base name {current.from_.image!r} is blank)",
                where,
                "base-blank",
            )
            return None
        if value.lower() == "scratch":
            return StageRef("scratch", "scratch")
        named = self.by_name.get(value.lower())
        if named is not None and named.index < current.index:
            return StageRef("stage", named.display_name, named.index)
        if named is not None and named.index > current.index:
            self.sink.error(
                f"FROM {value}: stage {named.display_name!r} is defined later (line "
                f"{named.location.line}); a stage can only build on stages defined before it",
                where,
                "from-later",
            )
            return None
        # FROM x AS x reads x as an image, as in Docker.
        if not is_image_reference(value):
            self.sink.error(f"FROM {value!r}: invalid image reference", where, "image-ref")
            return None
        return StageRef("image", value)


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
            self._arg(a, _Expansion(sink, pf.escape, self.global_env), self.global_env, {})
            for a in pf.global_args
        )

    def _arg(
        self, arg: Arg, x: _Expansion, env: dict[str, str], inherited: Mapping[str, str]
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
        outer = _Expansion(self.sink, self.pf.escape, self.global_env)
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
        x = _Expansion(self.sink, self.pf.escape, env)
        out: list[Instruction] = []
        for record in stage.instructions:
            if isinstance(record, Arg):
                out.append(self._arg(record, x, env, self.global_env))
                continue
            expanded = self._with_ref(_expand_instruction(record, x), stage)
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


def check_all(pf: Packerfile) -> list[PackerfileError]:
    """Every problem plan() would find in any stage with default args (what lint reports)."""
    sink = Sink(pf.path)
    planner = _Planner(pf, _NO_ARGS, sink)
    for stage in pf.stages:
        planner.expanded[stage.index] = planner.expand_stage(stage)
    planner.check_target(planner.expanded[pf.stages[-1].index])
    return list(sink.problems)
