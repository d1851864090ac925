"""Writing an OCI image layout all or nothing.

The writer fills a temporary sibling directory and renames it into place only when the ``with``
block ends without an exception, so an interrupted build never leaves a half layout that a
later step (or skopeo) would take for a real one.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from harness._fs import ensure_room, owned_name, remove_tree, sweep_stale
from harness.errors import Location, OCIError

from ._layer import COMPRESSIONS, Layer, LayerEntry, layer_bound, write_layer
from ._layout import LAYOUT_FILE, LAYOUT_VERSION, REF_NAME_GRAMMAR
from ._media import (
    DOCKER_CONFIG,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    REF_NAME,
    Descriptor,
    canonical_json,
    check_digest,
)

__all__ = ["LayoutWriter", "platform_of"]

_CHUNK = 1 << 20


class LayoutWriter:
    """Write an OCI image layout at ``output_dir``; use it as a context manager.

    Everything goes into a temporary sibling directory that replaces ``output_dir`` only when
    the block succeeds. An existing ``output_dir`` is replaced only if it is an OCI layout or
    empty: the writer never deletes a directory it cannot recognise.
    """

    def __init__(self, output_dir: str | os.PathLike[str]) -> None:
        self._target = Path(output_dir).absolute()
        self._tmp: Path | None = None
        self._tags: dict[str, Descriptor] = {}
        self._images: list[Descriptor] = []

    def __enter__(self) -> LayoutWriter:
        self._target.parent.mkdir(parents=True, exist_ok=True)
        _recover(self._target)
        _check_replaceable(self._target)
        name = owned_name(f".{self._target.name}.tmp-") + secrets.token_hex(4)
        self._tmp = self._target.with_name(name)
        # mkdir, not mkdtemp: the layout gets the umask's modes, not 0700, so that a registry
        # or daemon running as another user can read what we publish.
        self._tmp.mkdir()
        try:
            (self._tmp / "blobs" / "sha256").mkdir(parents=True)
            self._write_file(LAYOUT_FILE, canonical_json({"imageLayoutVersion": LAYOUT_VERSION}))
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tmp = self._tmp
        if tmp is None:
            return
        try:
            if exc_type is None:
                self._write_file("index.json", canonical_json(self._index()))
                _fsync_dir(tmp)
                _swap_in(tmp, self._target)
        finally:
            self._tmp = None
            if tmp.exists():  # gone when it was renamed into place
                shutil.rmtree(tmp, ignore_errors=True)

    @property
    def path(self) -> Path:
        """Where the layout will be once the block ends."""
        return self._target

    def add_blob(
        self,
        data: bytes | str | os.PathLike[str],
        media_type: str,
        *,
        annotations: Mapping[str, str] | None = None,
        artifact_type: str | None = None,
    ) -> Descriptor:
        """Store a blob (bytes, or a file streamed from its path) and describe it."""
        blobs = self._blobs()
        fd, tmp_name = _new_file(blobs)
        try:
            with os.fdopen(fd, "wb") as out:
                if isinstance(data, bytes | bytearray | memoryview):
                    raw = bytes(data)
                    out.write(raw)
                    digest, size = "sha256:" + hashlib.sha256(raw).hexdigest(), len(raw)
                else:
                    digest, size = _copy_hashed(data, out)
                _sync(out)
            self._store(Path(tmp_name), digest)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return Descriptor(media_type, digest, size, annotations or None, None, artifact_type)

    def add_stored_blob(self, path: str | os.PathLike[str], descriptor: Descriptor) -> Descriptor:
        """Add a blob whose digest the caller already verified (a content store's file).

        A hard link when the file is on the same filesystem, else a copy: a rebuild that reuses
        cached layers then costs no hashing and, usually, no copying.
        """
        final = self._blobs() / check_digest(descriptor.digest).split(":", 1)[1]
        if not final.exists():
            try:
                os.link(path, final)
            except OSError:
                fd, tmp_name = _new_file(self._blobs())
                try:
                    with os.fdopen(fd, "wb") as out, open(path, "rb") as source:
                        shutil.copyfileobj(source, out, _CHUNK)
                        _sync(out)
                    os.replace(tmp_name, final)
                except BaseException:
                    Path(tmp_name).unlink(missing_ok=True)
                    raise
        return descriptor

    def add_layer(
        self,
        entries: Iterable[LayerEntry],
        compression: str = "gzip",
        *,
        level: int | None = None,
        mtime: int | None = None,
    ) -> Layer:
        """Write a reproducible tar layer of ``entries`` (see LayerEntry) and store it; a layer
        that cannot fit the free disk is refused before a byte is written."""
        if compression not in COMPRESSIONS:
            raise OCIError(f"unknown layer compression {compression!r} (gzip, zstd or none)")
        entries = list(entries)
        blobs = self._blobs()
        ensure_room(blobs, layer_bound(entries), "the layer")
        fd, tmp_name = _new_file(blobs)
        try:
            with os.fdopen(fd, "wb") as out:
                stats = write_layer(entries, out, compression, level, mtime)
                _sync(out)
            self._store(Path(tmp_name), stats.digest)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        descriptor = Descriptor(COMPRESSIONS[compression], stats.digest, stats.size)
        return Layer(descriptor, stats.diff_id, stats.tar_size)

    def add_image(
        self,
        config: Mapping[str, Any],
        layers: Sequence[Layer | Descriptor],
        annotations: Mapping[str, str] | None = None,
        *,
        config_media_type: str = OCI_CONFIG,
        artifact_type: str | None = None,
    ) -> Descriptor:
        """Store ``config`` and an OCI manifest over ``layers``; return the manifest descriptor.

        For an image config, its ``rootfs.diff_ids`` must list the tar layers' diff_ids in
        order: a mismatch makes an image that every runtime rejects, so it fails here instead.
        """
        if config_media_type in (OCI_CONFIG, DOCKER_CONFIG):
            _check_rootfs(config, layers)
        config_descriptor = self.add_blob(canonical_json(config), config_media_type)
        manifest: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
        if artifact_type is not None:
            manifest["artifactType"] = artifact_type
        manifest["config"] = config_descriptor.to_json()
        manifest["layers"] = [
            (item.descriptor if isinstance(item, Layer) else item).to_json() for item in layers
        ]
        if annotations:
            manifest["annotations"] = dict(annotations)
        stored = self.add_blob(canonical_json(manifest), OCI_MANIFEST)
        platform = platform_of(config) if config_media_type == OCI_CONFIG else None
        descriptor = Descriptor(
            OCI_MANIFEST, stored.digest, stored.size, None, platform, artifact_type
        )
        if descriptor not in self._images:
            self._images.append(descriptor)
        return descriptor

    def tag(self, descriptor: Descriptor, ref_name: str) -> None:
        """Name ``descriptor`` in index.json (``org.opencontainers.image.ref.name``).

        Tagging a name again moves it. Untagged images are listed only when nothing is tagged.
        """
        self._blobs()
        if not isinstance(ref_name, str) or not REF_NAME_GRAMMAR.match(ref_name):
            raise OCIError(f"{ref_name!r} is not a valid OCI reference name")
        self._tags.pop(ref_name, None)
        self._tags[ref_name] = descriptor

    def _index(self) -> dict[str, Any]:
        manifests: list[dict[str, Any]] = []
        if self._tags:
            for name, descriptor in self._tags.items():
                entry = descriptor.to_json()
                entry["annotations"] = {**(descriptor.annotations or {}), REF_NAME: name}
                manifests.append(entry)
        else:
            manifests = [descriptor.to_json() for descriptor in self._images]
        return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}

    def _blobs(self) -> Path:
        if self._tmp is None:
            raise OCIError("LayoutWriter is used outside its 'with' block")
        return self._tmp / "blobs" / "sha256"

    def _store(self, tmp: Path, digest: str) -> None:
        final = self._blobs() / digest.split(":", 1)[1]
        if final.exists():
            tmp.unlink()  # same digest, same bytes
        else:
            os.replace(tmp, final)

    def _write_file(self, name: str, data: bytes) -> None:
        assert self._tmp is not None
        with open(self._tmp / name, "wb") as out:
            out.write(data)
            _sync(out)


def _check_rootfs(config: Mapping[str, Any], layers: Sequence[Layer | Descriptor]) -> None:
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, Mapping) else None
    expected = [item.diff_id for item in layers if isinstance(item, Layer)]
    if len(expected) != len(layers):
        return  # raw descriptors: the caller vouches for the diff_ids
    if diff_ids != expected:
        raise OCIError(
            f"config rootfs.diff_ids {diff_ids!r} do not match the layers' {expected!r}",
            key="rootfs.diff_ids",
        )


def platform_of(config: Mapping[str, Any]) -> dict[str, str] | None:
    """An image config's platform, as an index entry carries it for consumers to choose by."""
    arch, system = config.get("architecture"), config.get("os")
    if isinstance(arch, str) and isinstance(system, str):
        platform = {"architecture": arch, "os": system}
        if isinstance(config.get("variant"), str):
            platform["variant"] = config["variant"]
        return platform
    return None


def _check_replaceable(target: Path) -> None:
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise OCIError("exists and is not a directory; refusing to replace it", Location(target))
    if target.is_dir() and not (target / LAYOUT_FILE).is_file() and any(target.iterdir()):
        raise OCIError(
            "is a non-empty directory that is not an OCI layout; refusing to replace it",
            Location(target),
        )


def _recover(target: Path) -> None:
    """Undo what a killed writer left: its half-written layout goes; a layout it had moved
    aside to swap in the new one goes back in place when nothing replaced it, else goes too."""
    parent = target.parent
    sweep_stale(parent, f".{target.name}.tmp-")

    def restore(old: Path) -> None:
        if target.exists():
            remove_tree(old)
        else:
            os.rename(old, target)

    sweep_stale(parent, f".{target.name}.old-", restore)


def _swap_in(tmp: Path, target: Path) -> None:
    if not target.exists():
        os.rename(tmp, target)
        _fsync_dir(target.parent)
        return
    _check_replaceable(target)
    old = target.with_name(owned_name(f".{target.name}.old-") + secrets.token_hex(4))
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    _fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def _new_file(directory: Path) -> tuple[int, str]:
    """A new private name in ``directory``, created with the umask's modes (mkstemp's are 0600)."""
    path = directory / f".tmp-{secrets.token_hex(8)}"
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), str(path)


def _sync(out: BinaryIO) -> None:
    out.flush()
    os.fsync(out.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_hashed(source: str | os.PathLike[str], out: BinaryIO) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    try:
        with open(source, "rb") as file:
            while chunk := file.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
    except OSError as exc:
        raise OCIError(
            f"cannot read blob source: {exc.strerror or exc}", Location(os.fspath(source))
        ) from None
    return "sha256:" + digest.hexdigest(), size
