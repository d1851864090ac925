"""What to run for an image: its Cmd, with every file it names placed where a server can read it.

An image's Cmd names files by their in-image paths (``-m /app/model.gguf``, ``--lora a.gguf``,
``--chat-template-file t.jinja``). Those files are placed under one host directory (``root``) at
their in-image paths: hard links to the native builder's store when it holds them, else copies
extracted from the image's layers, cached per manifest digest. A runner then rewrites each path
to ``root`` (a process) or to a read-only mount of ``root`` (a container).

``--system-prompt-file`` is not passed on: llama-server at the pinned llama.cpp no longer has it
(upstream removed it), yet the seed's Packerfiles put it in CMD. The file is read instead and its
text becomes the system message of every chat request that has none of its own (as Ollama treats
a Modelfile's SYSTEM); completion requests are sent as they are. ``gguf-harness run`` does the
same for any client through a proxy (``_proxy``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.builder import BuildResult
from harness.errors import Location, SmokeError, printable
from harness.gguf import shard_names
from harness.oci import (
    Image,
    OCIError,
    SeedConfig,
    in_image_relative,
    parse_seed_config,
    read_layout,
    unpack,
)
from harness.packerfile import cmd_file_args
from harness.store import Store, StoredModel
from harness.toolchain import ServerArgsError, parse_server_args, server_option

__all__ = ["SYSTEM_PROMPT_FLAG", "ServerCommand", "from_stored", "server_command"]

SYSTEM_PROMPT_FLAG = "--system-prompt-file"


@dataclass(frozen=True)
class ServerCommand:
    """llama-server arguments for one image, plus where the files they name lie on this host."""

    source: str  # what it was made from, for messages: "out/smollm2:latest", a GGUF path
    args: tuple[str, ...]  # the image's Cmd, then the extra args, less --system-prompt-file
    paths: tuple[int, ...]  # indices of args that hold in-image paths ("/app/model.gguf")
    root: Path  # the host directory holding each in-image path at root/<path>
    system_prompt: str | None = None
    system_prompt_file: str | None = None  # where the system prompt came from
    digest: str | None = None  # the image's manifest digest

    def host_args(self) -> tuple[str, ...]:
        """The arguments with every in-image path turned into its host path."""
        return self._rewritten(str(self.root))

    def mounted_args(self, mount: str) -> tuple[str, ...]:
        """The arguments for a container that mounts ``root`` at ``mount``."""
        return self._rewritten(mount.rstrip("/"))

    def host_path(self, in_image: str) -> Path:
        return self.root / _relative(in_image)

    def with_args(self, extra: Sequence[str]) -> ServerCommand:
        """The same command with ``extra`` host-side arguments appended (they win, as later
        flags do in llama-server)."""
        return _assemble(
            self.source,
            [*self.args, *extra],
            self.paths,
            self.root,
            self.digest,
            (self.system_prompt, self.system_prompt_file),
        )

    @classmethod
    def from_layout(
        cls,
        layout: str | os.PathLike[str],
        tag: str | None = None,
        extra_args: Sequence[str] = (),
        *,
        cache_dir: Path | None = None,
    ) -> ServerCommand:
        """The command for the image tagged ``tag`` in an OCI layout (``DIR`` or ``DIR:TAG``)."""
        try:
            image = read_layout(layout, tag)
            # Named as the person wrote it, never by a blob's path.
            written = os.fspath(layout) + (f":{tag}" if tag else "")
            seed = parse_seed_config(image.config, f"{written} (image config)")
        except OCIError as error:
            raise SmokeError(f"cannot run {os.fspath(layout)}: {error}") from None
        root = _unpack(image, _needed(seed), None, cache_dir)
        source = os.fspath(layout) + (f":{tag}" if tag else "")
        return _command(source, seed, root, extra_args, image.descriptor.digest)

    @classmethod
    def from_build(
        cls, result: BuildResult, extra_args: Sequence[str] = (), *, cache_dir: Path | None = None
    ) -> ServerCommand:
        """The command for what the native builder just built: its files are linked from the
        build store rather than extracted; anything else the Cmd names comes from the layout."""
        try:
            seed = parse_seed_config(result.config, str(result.output))
        except OCIError as error:
            raise SmokeError(f"cannot run {result.output}:{result.tag}: {error}") from None
        try:
            image = read_layout(result.output, result.tag)
        except OCIError as error:
            raise SmokeError(f"cannot read {result.output}: {error}") from None
        root = _unpack(image, _needed(seed), result.files, cache_dir)
        source = f"{result.output}:{result.tag}"
        return _command(source, seed, root, extra_args, result.manifest.digest)

    @classmethod
    def from_gguf(
        cls, path: str | os.PathLike[str], extra_args: Sequence[str] = ()
    ) -> ServerCommand:
        """``-m FILE`` for a bare GGUF file (no image): its directory plays the image root."""
        file = Path(path).resolve()
        if not file.is_file():
            raise SmokeError("no such GGUF file", Location(file))
        return _assemble(
            str(path), ["-m", "/" + file.name, *extra_args], (1,), file.parent, None, (None, None)
        )

    def _rewritten(self, base: str) -> tuple[str, ...]:
        out = list(self.args)
        for index in self.paths:
            out[index] = f"{base}/{_relative(out[index])}"
        return tuple(out)


def server_command(
    image: str | os.PathLike[str] | BuildResult,
    extra_args: Sequence[str] = (),
    *,
    cache_dir: Path | None = None,
) -> ServerCommand:
    """A command from a BuildResult, a ``*.gguf`` file, an OCI layout (``DIR[:TAG]``), or a
    model in the local store (its reference or ID), as the seed's ``run`` takes one."""
    if isinstance(image, BuildResult):
        return ServerCommand.from_build(image, extra_args, cache_dir=cache_dir)
    if os.fspath(image).endswith(".gguf") and Path(image).is_file():
        return ServerCommand.from_gguf(image, extra_args)
    if not Path(os.fspath(image).rsplit(":", 1)[0]).exists() and not Path(image).exists():
        return from_stored(Store().get(os.fspath(image)), extra_args)
    return ServerCommand.from_layout(image, None, extra_args, cache_dir=cache_dir)


def from_stored(model: StoredModel, extra: Sequence[str] = ()) -> ServerCommand:
    """A stored model: its files are already unpacked, in place, under ``model.root``."""
    seed = parse_seed_config(model.config, model.reference)
    return _command(model.reference, seed, model.root, extra, model.manifest_digest)


def _command(
    source: str, seed: SeedConfig, root: Path, extra: Sequence[str], digest: str
) -> ServerCommand:
    cmd = list(seed.cmd)
    entries = [seed.model, seed.drafter, seed.projector, *seed.adapters]
    paths = {e.cmd_index for e in entries if e is not None and e.cmd_value}
    paths |= {f.index for f in cmd_file_args(cmd)}
    _refuse_host_paths(source, cmd, paths)
    return _assemble(source, [*cmd, *extra], tuple(sorted(paths)), root, digest, (None, None))


# Value hints of llama-server's options that name a place on the host or the network.
_PLACES = ("FNAME", "FILE", "PATH", "DIR", "URL", "<model>", "SERVERS")


def _refuse_host_paths(source: str, cmd: Sequence[str], rewritten: set[int]) -> None:
    """An image's Cmd is anyone's: every file it gives llama-server must be one the image carries
    (rewritten under the image's root). A path the harness would hand to llama-server as it is
    (``--path /``, ``--log-file ~/.bashrc``, ``--slot-save-path``, ``-hf``, ``--model-url``) is
    refused; the person running may still pass such options after ``--``."""
    try:
        parsed = parse_server_args(cmd)
    except ServerArgsError as error:
        raise SmokeError(f"{source}: the image's Cmd: {error}") from None
    for arg in parsed.args:
        hint = server_option(arg.key).value_hint or ""
        if arg.values and any(p in hint for p in _PLACES) and arg.index + 1 not in rewritten:
            raise SmokeError(
                f"{source}: the image's Cmd gives {printable(arg.name)}"
                f" {printable(' '.join(arg.values))}, a place outside the image: not run"
                " (pass it yourself after -- if you mean it)"
            )


def _needed(seed: SeedConfig) -> list[str]:
    entries = [seed.model, seed.drafter, seed.projector, *seed.adapters]
    # A split model (or drafter) is every shard: llama.cpp opens the others beside the first.
    values = [v for e in entries if e is not None and e.cmd_value for v in shard_names(e.cmd_value)]
    values += [f.path for f in cmd_file_args(seed.cmd)]
    return list(dict.fromkeys(values))


def _assemble(
    source: str,
    args: Sequence[str],
    paths: Sequence[int],
    root: Path,
    digest: str | None,
    system: tuple[str | None, str | None],
) -> ServerCommand:
    """Take every ``--system-prompt-file PATH`` out of ``args`` (the last one counts, as
    llama-server read its flags), read that file, and move the path indices along."""
    in_image = set(paths)
    kept: list[str] = []
    kept_paths: list[int] = []
    chosen: tuple[str, bool] | None = None
    i = 0
    while i < len(args):
        if args[i] == SYSTEM_PROMPT_FLAG and i + 1 < len(args):
            chosen = (args[i + 1], i + 1 in in_image)
            i += 2
            continue
        if i in in_image:
            kept_paths.append(len(kept))
        kept.append(args[i])
        i += 1
    prompt, prompt_file = system
    if chosen is not None:
        prompt_file, from_image = chosen
        file = root / _relative(prompt_file) if from_image else Path(prompt_file)
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise SmokeError(
                f"{SYSTEM_PROMPT_FLAG} {prompt_file}: cannot read it: {error}"
            ) from None
        # The newline a heredoc (CAT) or an editor ends a file with is not part of the prompt.
        prompt = text.rstrip("\n")
    return ServerCommand(source, tuple(kept), tuple(kept_paths), root, prompt, prompt_file, digest)


def _relative(in_image: str) -> str:
    return in_image_relative(in_image)


def _unpack(
    image: Image, needed: list[str], have: Mapping[str, Path] | None, cache_dir: Path | None
) -> Path:
    try:
        return unpack(image, needed, have=have, base=cache_dir)
    except OCIError as error:
        raise SmokeError(f"cannot take the image's files out of it: {error}") from None
