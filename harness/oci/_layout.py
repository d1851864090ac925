"""OCI image layout: a writer that publishes all or nothing, and a reader that trusts no byte.

The writer fills a temporary sibling directory and renames it into place only when the ``with``
block ends without an exception, so an interrupted build never leaves a half layout that a
later step (or skopeo) would take for a real one. The reader checks the digest and size of every
blob it reads, and turns any malformed JSON into an OCIError naming the file and key or offset.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from harness._fs import ensure_room
from harness.errors import Location, OCIError

from ._layer import COMPRESSIONS, Layer, LayerEntry, write_layer
from ._media import (
    DOCKER_CONFIG,
    IMAGE_MANIFESTS,
    INDEXES,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    REF_NAME,
    Descriptor,
    canonical_json,
    check_digest,
)

__all__ = ["Image", "LayoutWriter", "blob_path", "check_blob_size", "read_layout"]

_LAYOUT_FILE = "oci-layout"
_LAYOUT_VERSION = "1.0.0"
_CHUNK = 1 << 20
# Manifests, indexes and configs are small; a bigger "JSON" blob is corrupt or hostile, and
# reading it whole would cost memory in proportion to the lie.
_MAX_JSON = 64 << 20
_MAX_NESTING = 4
_COMPONENT = r"[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*"
_REF_NAME = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")  # OCI image-layout's ref grammar


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
        _check_replaceable(self._target)
        self._target.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self._target.with_name(f".{self._target.name}.tmp-{secrets.token_hex(4)}")
        # mkdir, not mkdtemp: the layout gets the umask's modes, not 0700, so that a registry
        # or daemon running as another user can read what we publish.
        self._tmp.mkdir()
        try:
            (self._tmp / "blobs" / "sha256").mkdir(parents=True)
            self._write_file(_LAYOUT_FILE, canonical_json({"imageLayoutVersion": _LAYOUT_VERSION}))
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
        ensure_room(blobs, _layer_bound(entries), "the layer")
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
        platform = _platform_of(config) if config_media_type == OCI_CONFIG else None
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
        if not isinstance(ref_name, str) or not _REF_NAME.match(ref_name):
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


def _platform_of(config: Mapping[str, Any]) -> dict[str, str] | None:
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
    if target.is_dir() and not (target / _LAYOUT_FILE).is_file() and any(target.iterdir()):
        raise OCIError(
            "is a non-empty directory that is not an OCI layout; refusing to replace it",
            Location(target),
        )


def _swap_in(tmp: Path, target: Path) -> None:
    if not target.exists():
        os.rename(tmp, target)
        _fsync_dir(target.parent)
        return
    _check_replaceable(target)
    old = target.with_name(f".{target.name}.old-{secrets.token_hex(4)}")
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    _fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def _layer_bound(entries: Sequence[LayerEntry]) -> int:
    """An upper bound of a layer's blob: its files, a header per file and the tar's padding;
    compression only shrinks it (incompressible data grows by under 0.1 %)."""
    size = 0
    for entry in entries:
        data = entry.source
        try:
            n = len(data) if isinstance(data, bytes) else os.stat(data).st_size
        except OSError:
            n = 0  # writing it says what is wrong with it
        size += 1024 + n + n // 512
    return size + (1 << 20)


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


# --- reading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """One image read from a layout: its manifest, config and layer descriptors, all verified."""

    root: Path
    ref_name: str | None
    descriptor: Descriptor  # the manifest's
    manifest: Mapping[str, Any]
    config_descriptor: Descriptor
    config: Mapping[str, Any]
    layers: tuple[Descriptor, ...]

    def blob_path(self, digest: str) -> Path:
        """Where the blob with ``digest`` lives in the layout (it may be absent)."""
        return blob_path(self.root, check_digest(digest))

    @property
    def labels(self) -> dict[str, str]:
        """The image config's ``config.Labels`` (empty when there are none)."""
        inner = self.config.get("config")
        labels = inner.get("Labels") if isinstance(inner, Mapping) else None
        if not isinstance(labels, Mapping):
            return {}
        return {str(k): str(v) for k, v in labels.items()}

    @property
    def diff_ids(self) -> tuple[str, ...]:
        rootfs = self.config.get("rootfs")
        ids = rootfs.get("diff_ids") if isinstance(rootfs, Mapping) else None
        return tuple(str(i) for i in ids) if isinstance(ids, list) else ()


def read_layout(
    path: str | os.PathLike[str],
    tag: str | None = None,
    *,
    platform: tuple[str, str] = ("linux", "amd64"),
) -> Image:
    """Read the image tagged ``tag`` (or given as ``DIR:TAG``) from the layout at ``path``.

    Without a tag the layout must hold exactly one manifest. An index (a multi-platform image,
    or one with attestations) is followed to ``platform`` (os, architecture).
    """
    root, tag = _split_reference(path, tag)
    _read_layout_file(root)
    index_path = root / "index.json"
    index = _load_json(_read_file(index_path), index_path)
    descriptors = _manifest_list(index, index_path)
    chosen = _choose_by_tag(descriptors, tag, index_path)
    ref_name = (chosen.annotations or {}).get(REF_NAME)
    for _ in range(_MAX_NESTING):
        if chosen.media_type not in INDEXES:
            break
        blob = blob_path(root, chosen.digest)
        nested = _load_json(_read_blob(root, chosen), blob)
        chosen = _choose_platform(_manifest_list(nested, blob), platform, blob)
    else:
        raise OCIError(f"indexes nested deeper than {_MAX_NESTING}", Location(index_path))
    return _read_image(root, chosen, ref_name)


def _split_reference(path: str | os.PathLike[str], tag: str | None) -> tuple[Path, str | None]:
    text = os.fspath(path)
    if tag is not None or Path(text).is_dir():
        return Path(text), tag
    # DIR:TAG, where the tag itself may hold ':' (the ref grammar allows it): the first split
    # whose left side is a directory wins, as skopeo's oci: transport reads it.
    for at, char in enumerate(text):
        if char == ":" and at and Path(text[:at]).is_dir():
            return Path(text[:at]), text[at + 1 :] or None
    raise OCIError("no OCI layout directory here", Location(text))


def _read_layout_file(root: Path) -> None:
    marker = root / _LAYOUT_FILE
    if not marker.is_file():
        raise OCIError("not an OCI image layout (no oci-layout file)", Location(root))
    data = _load_json(_read_file(marker), marker)
    version = data.get("imageLayoutVersion") if isinstance(data, dict) else None
    if not isinstance(version, str) or not version.startswith("1."):
        raise OCIError(
            f"unsupported imageLayoutVersion {version!r}",
            Location(marker),
            key="imageLayoutVersion",
        )


def _read_image(root: Path, descriptor: Descriptor, ref_name: str | None) -> Image:
    if descriptor.media_type not in IMAGE_MANIFESTS:
        raise OCIError(
            f"{descriptor.digest} is a {descriptor.media_type!r}, not an image manifest",
            Location(blob_path(root, descriptor.digest)),
        )
    manifest_path = blob_path(root, descriptor.digest)
    manifest = _load_json(_read_blob(root, descriptor), manifest_path)
    if not isinstance(manifest, dict):
        raise OCIError("manifest is not a JSON object", Location(manifest_path))
    declared = manifest.get("mediaType", descriptor.media_type)
    if declared != descriptor.media_type:
        raise OCIError(
            f"manifest says {declared!r} but is listed as {descriptor.media_type!r}",
            Location(manifest_path),
            key="mediaType",
        )
    config_descriptor = _descriptor(manifest.get("config"), "config", manifest_path)
    raw_layers = manifest.get("layers")
    if not isinstance(raw_layers, list):
        raise OCIError("missing or not a list", Location(manifest_path), key="layers")
    layers = tuple(
        _descriptor(item, f"layers[{i}]", manifest_path) for i, item in enumerate(raw_layers)
    )
    config: Mapping[str, Any] = {}
    config_path = blob_path(root, config_descriptor.digest)
    raw_config = _read_blob(root, config_descriptor)
    if config_descriptor.media_type.endswith("json"):
        loaded = _load_json(raw_config, config_path)
        if not isinstance(loaded, dict):
            raise OCIError("image config is not a JSON object", Location(config_path))
        config = loaded
    return Image(root, ref_name, descriptor, manifest, config_descriptor, config, layers)


def _manifest_list(index: Any, path: Path) -> list[Descriptor]:
    if not isinstance(index, dict):
        raise OCIError("index is not a JSON object", Location(path))
    items = index.get("manifests")
    if not isinstance(items, list):
        raise OCIError("missing or not a list", Location(path), key="manifests")
    return [_descriptor(item, f"manifests[{i}]", path) for i, item in enumerate(items)]


def _choose_by_tag(descriptors: list[Descriptor], tag: str | None, path: Path) -> Descriptor:
    if tag is not None:
        matches = [d for d in descriptors if (d.annotations or {}).get(REF_NAME) == tag]
        if not matches:
            raise OCIError(f"no image tagged {tag!r} (tags: {_tags(descriptors)})", Location(path))
        return matches[0]
    if len(descriptors) == 1:
        return descriptors[0]
    if not descriptors:
        raise OCIError("the layout holds no image", Location(path))
    raise OCIError(
        f"the layout holds {len(descriptors)} images; name one (tags: {_tags(descriptors)})",
        Location(path),
    )


def _tags(descriptors: list[Descriptor]) -> str:
    names = [(d.annotations or {}).get(REF_NAME) for d in descriptors]
    return ", ".join(sorted(n for n in names if n)) or "none"


def _choose_platform(
    descriptors: list[Descriptor], platform: tuple[str, str], path: Path
) -> Descriptor:
    if not descriptors:
        raise OCIError("index lists no manifests", Location(path))

    def matches(d: Descriptor, want: tuple[str, str] | None) -> bool:
        got = d.platform or {}
        if want is None:  # anything but BuildKit's attestation manifests (unknown/unknown)
            return got.get("os") != "unknown"
        return (got.get("os"), got.get("architecture")) == want

    for want in (platform, None):
        for descriptor in descriptors:
            if matches(descriptor, want):
                return descriptor
    return descriptors[0]  # what the seed's consumer does: the first manifest


def _descriptor(value: Any, key: str, path: Path) -> Descriptor:
    where = Location(path)
    if not isinstance(value, dict):
        raise OCIError("descriptor is not a JSON object", where, key=key)
    media_type = value.get("mediaType")
    if not isinstance(media_type, str) or not media_type:
        raise OCIError("missing or not a string", where, key=f"{key}.mediaType")
    digest = check_digest(value.get("digest"), f"{key}.digest", where)
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise OCIError(f"size {size!r} is not a non-negative integer", where, key=f"{key}.size")
    annotations = value.get("annotations")
    if annotations is not None and not (
        isinstance(annotations, dict) and all(isinstance(v, str) for v in annotations.values())
    ):
        raise OCIError("not a string-to-string object", where, key=f"{key}.annotations")
    platform = value.get("platform")
    if platform is not None and not isinstance(platform, dict):
        raise OCIError("not a JSON object", where, key=f"{key}.platform")
    artifact_type = value.get("artifactType")
    return Descriptor(
        media_type,
        digest,
        size,
        annotations or None,
        platform,
        artifact_type if isinstance(artifact_type, str) else None,
    )


def blob_path(root: Path, digest: str) -> Path:
    """Where a layout at ``root`` keeps the blob with ``digest``."""
    algorithm, hex_digest = digest.split(":", 1)
    return root / "blobs" / algorithm / hex_digest


def _read_file(path: Path) -> bytes:
    try:
        with open(path, "rb") as file:
            data = file.read(_MAX_JSON + 1)
    except OSError as exc:
        raise OCIError(f"cannot read: {exc.strerror or exc}", Location(path)) from None
    if len(data) > _MAX_JSON:
        raise OCIError(f"larger than {_MAX_JSON} bytes; not a plausible JSON file", Location(path))
    return data


def _read_blob(root: Path, descriptor: Descriptor) -> bytes:
    """A small blob's bytes after checking its size and digest against ``descriptor``."""
    path = blob_path(root, descriptor.digest)
    if descriptor.size > _MAX_JSON:
        raise OCIError(f"blob claims {descriptor.size} bytes; too large to read", Location(path))
    check_blob_size(path, descriptor)
    data = _read_file(path)
    algorithm = descriptor.digest.split(":", 1)[0]
    actual = f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
    if actual != descriptor.digest:
        raise OCIError(f"blob digest mismatch: content hashes to {actual}", Location(path))
    return data


def check_blob_size(path: Path, descriptor: Descriptor) -> None:
    """Fail unless the blob exists with the size its descriptor states."""
    try:
        size = path.stat().st_size
    except OSError:
        raise OCIError(f"blob {descriptor.digest} is missing", Location(path)) from None
    if size != descriptor.size:
        raise OCIError(
            f"blob size mismatch: {size} bytes on disk, descriptor says {descriptor.size}",
            Location(path),
        )


def _load_json(data: bytes, path: Path) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OCIError("not UTF-8 JSON", Location(path, offset=exc.start)) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        offset = len(text[: exc.pos].encode("utf-8"))
        raise OCIError(f"malformed JSON: {exc.msg}", Location(path, offset=offset)) from None
    except RecursionError:
        raise OCIError("JSON nested too deeply", Location(path)) from None
