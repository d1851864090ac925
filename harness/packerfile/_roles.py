"""Which CMD arguments name files the image must carry: the model and its companions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["FileArg", "Role", "RoleKind", "cmd_file_args", "cmd_roles", "scan_cmd"]

RoleKind = Literal["model", "drafter", "projector", "adapter"]

# flag -> (role, how many values follow it). The short forms are llama-server's own aliases.
_ROLE_FLAGS: dict[str, tuple[RoleKind, int]] = {
    "-m": ("model", 1),
    "--model": ("model", 1),
    "-md": ("drafter", 1),
    "--model-draft": ("drafter", 1),
    "-mm": ("projector", 1),
    "--mmproj": ("projector", 1),
    "--lora": ("adapter", 1),
    "--lora-scaled": ("adapter", 2),
    "--control-vector": ("adapter", 1),
    "--control-vector-scaled": ("adapter", 2),
}


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
    """Roles (effective ones only), file args, and (index, message) for flags missing values.

    Only the last ``-m``, ``-md`` and ``--mmproj`` count, as llama-server reads them; every
    adapter counts. An empty path is no role (a build arg set to "" switches a role off).
    """
    roles: list[Role] = []
    files: list[FileArg] = []
    problems: list[tuple[int, str]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        spec = _ROLE_FLAGS.get(arg)
        if spec is not None:
            kind, count = spec
            if i + count >= len(args):
                need = "a value" if count == 1 else "two values: PATH SCALE"
                problems.append((i, f"CMD: {arg} needs {need}"))
                break
            path = args[i + 1]
            if path:
                scale = args[i + 2] if count == 2 else None
                if kind != "adapter":
                    roles = [r for r in roles if r.kind != kind]
                roles.append(Role(kind, arg, path, i + 1, scale))
            i += 1 + count
            continue
        if arg.startswith("-") and arg.endswith("-file") and arg.strip("-") != "file":
            if i + 1 >= len(args):
                problems.append((i, f"CMD: {arg} needs a value"))
                break
            files.append(FileArg(arg, args[i + 1], i + 1))
            i += 2
            continue
        i += 1
    roles.sort(key=lambda r: r.index)
    return roles, files, problems


def cmd_roles(args: Sequence[str]) -> list[Role]:
    """The model, drafter, projector and adapters a llama-server argument list names."""
    return scan_cmd(args)[0]


def cmd_file_args(args: Sequence[str]) -> list[FileArg]:
    """Every ``*-file PATH`` argument (``--system-prompt-file``, ``--chat-template-file``...)."""
    return scan_cmd(args)[1]
