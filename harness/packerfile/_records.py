"""The records a Packerfile reads into: one frozen dataclass per instruction, stages, the plan.

``parse`` fills the fields with the text as written: variables unexpanded, shell quotes kept in
argument words (flag values have theirs removed already, as BuildKit does). ``plan`` returns
copies of the same records with every field expanded to its final value and every
``--from``/``FROM`` resolved to a ``StageRef``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from harness.errors import Location, PackerfileWarning
from harness.packerfile._roles import FileArg, Role, cmd_file_args, cmd_roles
from harness.packerfile._types import DEFAULT_CONVERT_TYPE, DEFAULT_QUANTIZE_TYPE

__all__ = [
    "Add",
    "Arg",
    "BuildPlan",
    "Cat",
    "Cmd",
    "Convert",
    "Copy",
    "Directive",
    "From",
    "Heredoc",
    "Instruction",
    "Label",
    "Packerfile",
    "Quantize",
    "RefKind",
    "Stage",
    "StageRef",
]

RefKind = Literal["stage", "context", "image", "scratch"]


@dataclass(frozen=True)
class StageRef:
    """Where a FROM or a ``--from`` takes its files.

    ``stage``: an earlier stage (``index``; for CONVERT/QUANTIZE without ``--from``, the current
    stage as it stands at that instruction); ``context``: the build context; ``image``: an image
    reference (``name``); ``scratch``: nothing.
    """

    kind: RefKind
    name: str
    index: int | None = None

    def __str__(self) -> str:
        if self.kind == "stage":
            return f"stage {self.index} ({self.name})"
        return f"{self.kind} {self.name}" if self.kind == "image" else self.kind


@dataclass(frozen=True)
class Directive:
    """A parser directive from the top of the file (``syntax``, ``escape``, ``check``)."""

    name: str
    value: str
    location: Location


@dataclass(frozen=True)
class Heredoc:
    """An inline document. ``content`` has ``<<-`` tabs stripped; ``expand`` is False when the
    delimiter was quoted. An empty ``name`` marks CAT text given as plain words."""

    name: str
    content: str
    expand: bool
    chomp: bool
    location: Location


@dataclass(frozen=True, kw_only=True)
class _Record:
    location: Location
    # The keyword as written ("quantize", "QUANTIZE"): history keeps the author's spelling.
    keyword: str
    # The logical source line: continuations joined, heredoc bodies left out.
    original: str
    # The history entry (image config ``created_by``): ``original`` until plan() expands it.
    created_by: str
    # Where each part was written: "flag:NAME", "arg:N" (Nth argument), "dest", "name".
    spans: Mapping[str, Location] = field(default_factory=dict, compare=False, repr=False)

    def where(self, part: str) -> Location:
        """The location of one part of the instruction, or of the instruction itself."""
        return self.spans.get(part, self.location)


@dataclass(frozen=True, kw_only=True)
class Add(_Record):
    sources: tuple[str, ...]
    dest: str
    checksum: str | None = None
    keep_git_dir: bool = False
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    exclude: tuple[str, ...] = ()
    heredocs: tuple[Heredoc, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Copy(_Record):
    from_: str | None
    sources: tuple[str, ...]
    dest: str
    parents: bool = False
    exclude: tuple[str, ...] = ()
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    heredocs: tuple[Heredoc, ...] = ()
    from_ref: StageRef | None = None


@dataclass(frozen=True, kw_only=True)
class Cat(_Record):
    """CAT writes ``content``, the concatenation of ``parts`` in order, to ``dest``."""

    content: str
    dest: str
    parts: tuple[Heredoc, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Convert(_Record):
    from_: str | None
    type: str = DEFAULT_CONVERT_TYPE
    cls: str = "model"
    base: str | None = None
    source: str
    dest: str
    from_ref: StageRef | None = None


@dataclass(frozen=True, kw_only=True)
class Quantize(_Record):
    from_: str | None
    type: str = DEFAULT_QUANTIZE_TYPE
    imatrix: str | None = None
    include_weights: tuple[str, ...] = ()
    exclude_weights: tuple[str, ...] = ()
    pure: bool = False
    leave_output_tensor: bool = False
    allow_requantize: bool = False  # llama-quantize's flag: quantize an already quantized file
    output_tensor_type: str | None = None
    token_embedding_type: str | None = None
    source: str
    dest: str
    from_ref: StageRef | None = None


@dataclass(frozen=True, kw_only=True)
class Cmd(_Record):
    """llama-server style arguments (JSON form only)."""

    args: tuple[str, ...]

    @property
    def roles(self) -> list[Role]:
        return cmd_roles(self.args)

    @property
    def file_args(self) -> list[FileArg]:
        return cmd_file_args(self.args)

    @property
    def model(self) -> Role | None:
        return next((r for r in self.roles if r.kind == "model"), None)


@dataclass(frozen=True, kw_only=True)
class Label(_Record):
    items: tuple[tuple[str, str], ...]


@dataclass(frozen=True, kw_only=True)
class Arg(_Record):
    """One name of an ARG line (``ARG A=1 B`` gives two records).

    ``value`` is set by plan(): the build arg, else the expanded default, else the global ARG's
    value; None when the name stays undefined.
    """

    name: str
    default: str | None = None
    value: str | None = None


@dataclass(frozen=True, kw_only=True)
class From(_Record):
    image: str
    name: str | None = None
    platform: str | None = None


Instruction: TypeAlias = Add | Arg | Cat | Cmd | Copy | Convert | Label | Quantize


@dataclass(frozen=True, kw_only=True)
class Stage:
    index: int
    name: str | None
    from_: From
    instructions: tuple[Instruction, ...]
    location: Location
    base_ref: StageRef | None = None

    @property
    def base(self) -> str:
        return self.from_.image

    @property
    def display_name(self) -> str:
        return self.name or f"stage-{self.index}"

    @property
    def cmd(self) -> Cmd | None:
        """The CMD that takes effect: the stage's last one."""
        cmds = [i for i in self.instructions if isinstance(i, Cmd)]
        return cmds[-1] if cmds else None


def _find_stage(stages: tuple[Stage, ...], key: str | int) -> Stage:
    for stage in stages:
        if stage.index == key or (isinstance(key, str) and stage.name == key.lower()):
            return stage
    raise KeyError(key)


@dataclass(frozen=True, kw_only=True)
class Packerfile:
    path: str
    escape: str
    syntax: str | None
    directives: tuple[Directive, ...]
    global_args: tuple[Arg, ...]
    stages: tuple[Stage, ...]
    warnings: tuple[PackerfileWarning, ...] = ()

    def stage(self, key: str | int) -> Stage:
        """A stage by index or (case-insensitive) name; KeyError if there is none."""
        return _find_stage(self.stages, key)


@dataclass(frozen=True, kw_only=True)
class BuildPlan:
    """What to build for one target: its lineage in build order (target last), expanded."""

    packerfile: Packerfile
    stages: tuple[Stage, ...]
    args: tuple[tuple[str, str], ...]
    build_args: tuple[tuple[str, str], ...]
    warnings: tuple[PackerfileWarning, ...] = ()

    @property
    def target(self) -> Stage:
        return self.stages[-1]

    def stage(self, key: str | int) -> Stage:
        """A planned stage by index or name; KeyError if it is not in the lineage."""
        return _find_stage(self.stages, key)

    @property
    def cmd(self) -> Cmd | None:
        """The target's CMD, or the one it inherits through FROM earlier stages.

        None means the image config's Cmd comes from the base image (or is missing).
        """
        stage = self.target
        while True:
            if stage.cmd is not None:
                return stage.cmd
            ref = stage.base_ref
            if ref is None or ref.kind != "stage" or ref.index is None:
                return None
            stage = self.stage(ref.index)
