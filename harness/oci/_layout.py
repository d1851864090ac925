"""Reading an OCI image layout, trusting no byte: the digest and size of every blob read are
checked, and malformed JSON becomes an OCIError naming the file and key or offset. (Writing one:
_layout_write.)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import Location, OCIError

from ._media import (
    IMAGE_MANIFESTS,
    INDEXES,
    REF_NAME,
    Descriptor,
    check_digest,
    shown,
)

__all__ = [
    "LAYOUT_FILE",
    "LAYOUT_VERSION",
    "REF_NAME_GRAMMAR",
    "Image",
    "blob_path",
    "check_blob_size",
    "layout_index",
    "read_blob",
    "read_layout",
]

LAYOUT_FILE = "oci-layout"
LAYOUT_VERSION = "1.0.0"
_CHUNK = 1 << 20
# Manifests, indexes and configs are small; a bigger "JSON" blob is corrupt or hostile, and
# reading it whole would cost memory in proportion to the lie.
_MAX_JSON = 64 << 20
_MAX_NESTING = 4
_COMPONENT = r"[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*"
REF_NAME_GRAMMAR = re.compile(
    rf"^{_COMPONENT}(?:/{_COMPONENT})*$"
)  # OCI image-layout's ref grammar


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


def layout_index(root: Path) -> list[Descriptor]:
    """What the layout's index.json lists, each descriptor checked (a layout taken whole, as a
    push takes it)."""
    _read_layout_file(root)
    index_path = root / "index.json"
    return _manifest_list(_load_json(_read_file(index_path), index_path), index_path)


def read_blob(root: Path, descriptor: Descriptor) -> bytes:
    """A small blob (a manifest, an index, a config) of the layout, its size and digest checked."""
    return _read_blob(root, descriptor)


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
    marker = root / LAYOUT_FILE
    if not marker.is_file():
        raise OCIError("not an OCI image layout (no oci-layout file)", Location(root))
    data = _load_json(_read_file(marker), marker)
    version = data.get("imageLayoutVersion") if isinstance(data, dict) else None
    if not isinstance(version, str) or not version.startswith("1."):
        raise OCIError(
            f"unsupported imageLayoutVersion {shown(version)}",
            Location(marker),
            key="imageLayoutVersion",
        )


def _read_image(root: Path, descriptor: Descriptor, ref_name: str | None) -> Image:
    if descriptor.media_type not in IMAGE_MANIFESTS:
        raise OCIError(
            f"{descriptor.digest} is a {shown(descriptor.media_type)}, not an image manifest",
            Location(blob_path(root, descriptor.digest)),
        )
    manifest_path = blob_path(root, descriptor.digest)
    manifest = _load_json(_read_blob(root, descriptor), manifest_path)
    if not isinstance(manifest, dict):
        raise OCIError("manifest is not a JSON object", Location(manifest_path))
    declared = manifest.get("mediaType", descriptor.media_type)
    if declared != descriptor.media_type:
        raise OCIError(
            f"manifest says {shown(declared)} but is listed as {shown(descriptor.media_type)}",
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
            raise OCIError(
                f"no image tagged {shown(tag)} (tags: {_tags(descriptors)})", Location(path)
            )
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
    names = sorted(n for d in descriptors if (n := (d.annotations or {}).get(REF_NAME)))
    shown_names = [n if len(n) <= 80 else shown(n) for n in names[:10]]
    more = f" and {len(names) - 10} more" if len(names) > 10 else ""
    return (", ".join(shown_names) + more) or "none"


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
        raise OCIError(
            f"size {shown(size)} is not a non-negative integer", where, key=f"{key}.size"
        )
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
    except ValueError as exc:  # an integer past Python's 4,300 digits
        raise OCIError(f"malformed JSON: {exc}", Location(path)) from None
