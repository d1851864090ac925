"""The files of a seed image, extracted once, hashed, and sorted by the role each one plays."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from harness.errors import PublishError
from harness.gguf import shard_names
from harness.oci import Image, OCIError, in_image_relative, parse_seed_config, unpack
from harness.packerfile import cmd_file_args, cmd_roles

__all__ = ["ImageFiles", "ModelFile", "extract_files"]

_CHUNK = 1 << 20
_DOC_NAMES = ("readme", "license", "licence", "notice", "copying")


@dataclass(frozen=True)
class ModelFile:
    path: str  # in-image path without the leading slash
    host: Path  # the extracted copy
    size: int
    digest: str
    mode: int
    role: str  # model, drafter, projector, adapter, chat-template, doc, config, gguf

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name


@dataclass(frozen=True)
class ImageFiles:
    files: tuple[ModelFile, ...]  # model first, then the other GGUFs, configs, docs
    cmd: tuple[str, ...]
    created: str
    labels: dict[str, str]

    def by_role(self, *roles: str) -> list[ModelFile]:
        return [f for f in self.files if f.role in roles]


def extract_files(image: Image) -> ImageFiles:
    """Every regular file of the image (unpacked once per manifest: harness.oci.unpack), each
    with the role the image's Cmd gives it."""
    try:
        seed = parse_seed_config(image.config)
    except OCIError as exc:
        raise PublishError(f"not a model image the seed's consumer can read: {exc}") from None
    try:
        root = unpack(image)
    except OCIError as exc:
        raise PublishError(f"cannot extract the image's files: {exc}") from None
    roles: dict[str, str] = {}
    for named in cmd_roles(seed.cmd):
        for shard in shard_names(named.path):  # a split model: every shard is the model
            roles.setdefault(in_image_relative(shard), named.kind)
    for arg in cmd_file_args(seed.cmd):
        if arg.flag == "--chat-template-file":
            roles.setdefault(in_image_relative(arg.path), "chat-template")
    found: list[ModelFile] = []
    for folder, _dirs, names in os.walk(root):
        for name in names:
            host = Path(folder) / name
            if host.is_symlink() or not host.is_file():
                continue
            rel = host.relative_to(root).as_posix()
            role = roles.get(rel) or _guess_role(rel)
            digest, size = _sha256(host)
            found.append(ModelFile(rel, host, size, digest, host.stat().st_mode & 0o777, role))
    if not any(f.role == "model" for f in found):
        raise PublishError(f"the main model {seed.model.cmd_value!r} is not a file in the image")
    order = ("model", "drafter", "projector", "adapter", "gguf", "chat-template", "config", "doc")
    found.sort(key=lambda f: (order.index(f.role), f.path))
    created = image.config.get("created")
    return ImageFiles(
        tuple(found), seed.cmd, created if isinstance(created, str) else "", dict(seed.labels)
    )


def _guess_role(rel: str) -> str:
    name = PurePosixPath(rel).name.lower()
    if name.endswith(".gguf"):
        return "gguf"
    if name.startswith(_DOC_NAMES) or name.endswith(".md"):
        return "doc"
    if name.endswith((".jinja", ".jinja2")):
        return "chat-template"
    return "config"


def _sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return "sha256:" + digest.hexdigest(), size
