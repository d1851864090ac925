"""Which CMD arguments name files the image must carry: the model and its companions."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from harness.toolchain import ServerArgsError, parse_server_args

__all__ = ["FileArg", "Role", "RoleKind", "cmd_file_args", "cmd_roles", "scan_cmd"]

RoleKind = Literal["model", "drafter", "projector", "adapter"]

# llama-server's option (its canonical name in harness.toolchain's argv model) -> role
_ROLE_KEYS: dict[str, RoleKind] = {
    "--model": "model",
    "--spec-draft-model": "drafter",
    "--mmproj": "projector",
    "--lora": "adapter",
    "--lora-scaled": "adapter",
    "--control-vector": "adapter",
    "--control-vector-scaled": "adapter",
}
_SCALED = frozenset({"--lora-scaled", "--control-vector-scaled"})


@dataclass(frozen=True)
class Role:
    """A GGUF file the CMD points at; ``index`` is the position of ``path`` in the args."""

    kind: RoleKind
    flag: str
    path: str
    index: int
    scale: str | None = None


@dataclass(frozen=True)
class FileArg:
    """A ``--something-file PATH`` argument, whose path moves with the image's files."""

    flag: str
    path: str
    index: int


def scan_cmd(args: Sequence[str]) -> tuple[list[Role], list[FileArg], list[tuple[int, str]]]:
    """Roles (effective ones only), file args, and (index, message) for what llama-server would
    refuse, reading ``args`` as llama-server does (harness.toolchain.parse_server_args).

    Only the last ``-m``, ``-md`` and ``--mmproj`` count, as llama-server reads them; every
    adapter counts. An empty path is no role (a build arg set to "" switches a role off).
    ``--lora-scaled`` and ``--control-vector-scaled`` take ``FNAME:SCALE`` at this llama.cpp.
    """
    try:
        parsed = parse_server_args(args)
    except ServerArgsError as error:
        return [], [], [(max(error.index, 0), f"CMD: {_seed_hint(args, error)}")]
    roles: list[Role] = []
    files: list[FileArg] = []
    problems: list[tuple[int, str]] = []
    for arg in parsed.args:
        kind = _ROLE_KEYS.get(arg.key)
        if kind is None:
            if arg.key.endswith("-file") and len(arg.values) == 1:
                files.append(FileArg(arg.name, arg.value, arg.index + 1))
            continue
        path, scale = arg.value, None
        if kind == "adapter" and "," in path:
            problems.append((arg.index, f"CMD: {arg.name} {path}: give each adapter its own flag"))
            continue
        if arg.key in _SCALED:
            path, colon, scale = path.rpartition(":")
            if not colon or not path:
                problems.append((arg.index, f"CMD: {arg.name} takes FNAME:SCALE"))
                continue
        if not path:
            continue
        if kind != "adapter":
            roles = [r for r in roles if r.kind != kind]
        roles.append(Role(kind, arg.name, path, arg.index + 1, scale))
    roles.sort(key=lambda r: r.index)
    return roles, files, problems


def _seed_hint(args: Sequence[str], error: ServerArgsError) -> str:
    """The seed's ``--lora-scaled PATH SCALE`` became ``--lora-scaled PATH:SCALE``: say so."""
    at = error.index
    if at >= 2 and args[at - 2] in ("--lora-scaled", "--control-vector-scaled"):
        with contextlib.suppress(ValueError):
            float(args[at])
            return (
                f"{args[at - 2]} {args[at - 1]} {args[at]}: this llama-server takes"
                f" {args[at - 2]} {args[at - 1]}:{args[at]}"
            )
    return str(error)


def cmd_roles(args: Sequence[str]) -> list[Role]:
    """The model, drafter, projector and adapters a llama-server argument list names."""
    return scan_cmd(args)[0]


def cmd_file_args(args: Sequence[str]) -> list[FileArg]:
    """Every ``*-file PATH`` argument (``--system-prompt-file``, ``--chat-template-file``...)."""
    return scan_cmd(args)[1]
