"""An image tar from Docker (``buildx --output type=oci`` or ``docker save``) as an OCI layout.

Two archive shapes arrive here: an OCI image layout in a tar (buildx's OCI exporter, and
``docker save`` from Docker 25 on) and the legacy ``docker save`` format (``manifest.json``,
a config file and one uncompressed ``layer.tar`` per layer), which Docker 20.10 writes. Either
becomes a single-image OCI layout tagged as asked, like the native builder's output.

The tar is not trusted: only regular files with the names a layout or a save archive has are
read, each blob is hashed as it is copied and must match its name, nothing is written under a
name taken from the tar, and the result is read back with ``read_layout`` (which checks every
descriptor) before it replaces the output directory all at once.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import shutil
import tarfile
from pathlib import Path, PurePosixPath
from typing import IO, Any

from harness.errors import BuildError, Location
from harness.oci import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    Descriptor,
    LayoutWriter,
    OCIError,
    canonical_json,
    read_layout,
)

__all__ = ["import_archive"]

_BLOB = re.compile(r"^blobs/sha256/([0-9a-f]{64})$")
_CHUNK = 1 << 20
_MAX_JSON = 16 << 20
_MAX_LINKS = 8  # docker save links a repeated layer to its first copy; never a chain


def import_archive(archive: Path, output: Path, tag: str) -> Descriptor:
    """Write the one image in ``archive`` to an OCI layout at ``output`` tagged ``tag``.

    Returns the manifest's descriptor. BuildError when the archive is neither shape, holds no
    single image, or any blob does not hash to its name.
    """
    staging = output.with_name(f".{output.name}.import-{secrets.token_hex(4)}")
    staging.mkdir(parents=True)
    try:
        try:
            with tarfile.open(archive) as tar:
                members = {_clean(m.name): m for m in tar.getmembers()}
                if "oci-layout" in members and "index.json" in members:
                    _stage_oci(tar, members, staging)
                elif "manifest.json" in members:
                    _stage_docker_save(tar, members, staging)
                else:
                    raise BuildError(
                        "the image archive is neither an OCI layout nor a docker save archive",
                        Location(archive),
                    )
        except (tarfile.TarError, OSError) as exc:
            raise BuildError(f"cannot read the image archive: {exc}", Location(archive)) from None
        return _publish(staging, output, tag)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _clean(name: str) -> str:
    return str(PurePosixPath(name.removeprefix("./"))) if name not in (".", "./") else ""


def _stage_oci(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], staging: Path) -> None:
    blobs = staging / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for name, member in members.items():
        found = _BLOB.match(name)
        if found is None or not member.isfile():
            continue
        digest = _copy_member(tar, member, blobs)
        if digest != found.group(1):
            raise BuildError(f"image archive: blob {name} hashes to sha256:{digest}")
    index = _json(tar, members, "index.json")
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(manifests, list) or len(manifests) != 1:
        count = len(manifests) if isinstance(manifests, list) else 0
        raise BuildError(f"image archive: index.json lists {count} images, not one")
    # Our own index: one entry, no tag of the exporter's (the output gets the caller's tag).
    if not isinstance(manifests[0], dict):
        raise BuildError("image archive: index.json's manifest entry is not an object")
    entry = {k: v for k, v in manifests[0].items() if k != "annotations"}
    _write_layout_files(staging, entry)


def _stage_docker_save(
    tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], staging: Path
) -> None:
    saved = _json(tar, members, "manifest.json")
    if not isinstance(saved, list) or len(saved) != 1 or not isinstance(saved[0], dict):
        count = len(saved) if isinstance(saved, list) else 0
        raise BuildError(f"image archive: manifest.json lists {count} images, not one")
    config_name, layer_names = saved[0].get("Config"), saved[0].get("Layers")
    if not isinstance(config_name, str) or not isinstance(layer_names, list):
        raise BuildError("image archive: manifest.json has no Config or Layers")
    blobs = staging / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    config = _member(tar, members, config_name)
    config_digest = _copy_member(tar, config, blobs)
    try:
        config_data = json.loads((blobs / config_digest).read_bytes())
        diff_ids = config_data["rootfs"]["diff_ids"]
    except (ValueError, TypeError, KeyError):
        raise BuildError(f"image archive: {config_name} is not an image config") from None
    if not isinstance(diff_ids, list) or len(diff_ids) != len(layer_names):
        raise BuildError("image archive: config rootfs.diff_ids do not match the layers")
    layers = []
    for name, diff_id in zip(layer_names, diff_ids, strict=True):
        digest = _copy_member(tar, _member(tar, members, str(name)), blobs)
        # Saved layers are uncompressed, so the blob's digest is the layer's diff_id.
        if f"sha256:{digest}" != diff_id:
            raise BuildError(f"image archive: layer {name} is sha256:{digest}, not {diff_id}")
        layers.append({"mediaType": OCI_LAYER, "digest": diff_id, "size": _size(blobs, digest)})
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": f"sha256:{config_digest}",
            "size": config.size,
        },
        "layers": layers,
    }
    data = canonical_json(manifest)
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    _write_layout_files(
        staging, {"mediaType": OCI_MANIFEST, "digest": f"sha256:{digest}", "size": len(data)}
    )


def _write_layout_files(staging: Path, entry: dict[str, Any]) -> None:
    (staging / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}
    (staging / "index.json").write_bytes(canonical_json(index))


def _publish(staging: Path, output: Path, tag: str) -> Descriptor:
    """Read the staged layout back (verifying it) and write its one image to ``output``."""
    try:
        image = read_layout(staging)
    except OCIError as error:
        raise BuildError(f"the built image is not a valid OCI image: {error}") from None
    chosen = image.descriptor
    manifest = Descriptor(chosen.media_type, chosen.digest, chosen.size, None, chosen.platform)
    try:
        with LayoutWriter(output) as writer:
            for descriptor in (image.config_descriptor, *image.layers, manifest):
                writer.add_stored_blob(image.blob_path(descriptor.digest), descriptor)
            writer.tag(manifest, tag)
    except OCIError as error:
        raise BuildError(f"cannot write the image layout: {error}", Location(output)) from None
    return manifest


def _member(
    tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], name: str
) -> tarfile.TarInfo:
    """The regular file ``name`` in the archive, following docker save's links between layers."""
    current = _clean(name)
    for _ in range(_MAX_LINKS):
        member = members.get(current)
        if member is None:
            raise BuildError(f"image archive: {name} is missing")
        if member.isfile():
            return member
        if not (member.issym() or member.islnk()):
            raise BuildError(f"image archive: {name} is not a regular file")
        base = PurePosixPath(current).parent if member.issym() else PurePosixPath()
        parts: list[str] = []
        for part in (base / member.linkname).parts:
            if part == "..":
                if not parts:
                    raise BuildError(f"image archive: {name} links outside the archive")
                parts.pop()
            elif part not in (".", "/"):
                parts.append(part)
        current = "/".join(parts)
    raise BuildError(f"image archive: {name}: too many links")


def _copy_member(tar: tarfile.TarFile, member: tarfile.TarInfo, blobs: Path) -> str:
    """Copy a member's bytes into ``blobs`` under their sha256 (hex) and return it."""
    source = tar.extractfile(member)
    if source is None:
        raise BuildError(f"image archive: {member.name} is not a regular file")
    tmp = blobs / f".tmp-{secrets.token_hex(8)}"
    digest = hashlib.sha256()
    with source, open(tmp, "wb") as out:
        _copy(source, out, digest)
    hex_digest = digest.hexdigest()
    tmp.replace(blobs / hex_digest)
    return hex_digest


def _copy(source: IO[bytes], out: IO[bytes], digest: Any) -> None:
    while chunk := source.read(_CHUNK):
        digest.update(chunk)
        out.write(chunk)


def _json(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], name: str) -> Any:
    member = _member(tar, members, name)
    if member.size > _MAX_JSON:
        raise BuildError(f"image archive: {name} is too large for a JSON file")
    source = tar.extractfile(member)
    assert source is not None  # _member returned a regular file
    try:
        return json.loads(source.read())
    except ValueError as exc:
        raise BuildError(f"image archive: {name} is not JSON: {exc}") from None


def _size(blobs: Path, digest: str) -> int:
    return (blobs / digest).stat().st_size
