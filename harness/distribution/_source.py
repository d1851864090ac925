"""One interface over every place an image is read from, as containers/image's ImageSource.

An ``ImageSource`` names its image (``image()``: the manifest's exact bytes, its config and
layer descriptors, and the index it was chosen from), says where a blob already lies on this
machine (``local``), and writes a blob's bytes verified (``fetch``). The store pulls through it;
an OCI layout (``LayoutImageSource``, what the builder and a docker-archive import write), a
registry (``RegistryImageSource``) implement it, so that bringing an image into the store is
the same code whichever it comes from. (The store itself keeps tar layers unpacked, not as
blobs: what it holds is read as files, ``harness.pipeline.artifact_of_stored``.)
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from harness.errors import DigestError
from harness.oci import Descriptor, read_layout

from ._client import ManifestBlob, RegistryClient
from ._download import Prefix
from ._pull import Platform, resolve
from ._reference import Reference

__all__ = [
    "ImageSource",
    "LayoutImageSource",
    "RegistryImageSource",
    "SourceImage",
    "copy_verified",
]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class SourceImage:
    """What an image source holds: the manifest as exact bytes, the descriptors it lists, and
    the index it was chosen from (a platform of a multi-platform image)."""

    manifest: ManifestBlob
    config: Descriptor
    layers: tuple[Descriptor, ...]
    index: ManifestBlob | None = None


class ImageSource(Protocol):
    name: str  # for messages: the layout, the reference

    def image(self) -> SourceImage:
        """The image, its manifest verified against its digest."""

    def local(self, descriptor: Descriptor) -> Path | None:
        """A file on this machine holding the blob (not yet verified), if there is one."""

    def fetch(self, descriptor: Descriptor, out: BinaryIO, prefix: Prefix | None = None) -> None:
        """Write the blob's bytes to ``out``, checking its size and digest (DigestError); with
        ``prefix``, the bytes after it (the caller hashed and holds the prefix)."""


class LayoutImageSource:
    """The image tagged ``tag`` in an OCI layout (``DIR``; the only one when ``tag`` is None)."""

    def __init__(self, layout: str | os.PathLike[str], tag: str | None = None) -> None:
        self._image = read_layout(layout, tag)
        self.name = os.fspath(layout) + (f":{tag}" if tag else "")

    def image(self) -> SourceImage:
        image = self._image
        data = image.blob_path(image.descriptor.digest).read_bytes()
        manifest = ManifestBlob(image.descriptor.media_type, image.descriptor.digest, data)
        return SourceImage(manifest, image.config_descriptor, tuple(image.layers))

    def local(self, descriptor: Descriptor) -> Path | None:
        path = self._image.blob_path(descriptor.digest)
        return path if path.is_file() else None

    def fetch(self, descriptor: Descriptor, out: BinaryIO, prefix: Prefix | None = None) -> None:
        path = self.local(descriptor)
        if path is None:
            raise DigestError(f"blob {descriptor.digest} is missing from the layout", self.name)
        copy_verified(path, descriptor, out, self.name, prefix)


class RegistryImageSource:
    """The image a reference names in its registry; an index is followed to ``platform``."""

    def __init__(
        self,
        client: RegistryClient,
        reference: Reference,
        platform: Platform = ("linux", "amd64"),
    ) -> None:
        self._client = client
        self._reference = reference
        self._platform = platform
        self.name = str(reference)

    def image(self) -> SourceImage:
        found = resolve(self._client, self._reference, self._platform)
        return SourceImage(found.manifest, found.config, found.layers, found.index)

    def local(self, descriptor: Descriptor) -> Path | None:
        return None

    def fetch(self, descriptor: Descriptor, out: BinaryIO, prefix: Prefix | None = None) -> None:
        self._client.fetch_blob(self._reference.repository, descriptor, out, prefix)


def copy_verified(
    path: Path, descriptor: Descriptor, out: BinaryIO, name: str, prefix: Prefix | None = None
) -> None:
    """Copy a blob file to ``out`` (after ``prefix``), refusing it when its size or digest is
    not the descriptor's."""
    digest = prefix.hash if prefix else hashlib.new(descriptor.digest.split(":", 1)[0])
    size = prefix.size if prefix else 0
    with open(path, "rb") as source:
        source.seek(size)
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if size > descriptor.size:
                break
            out.write(chunk)
    actual = f"{digest.name}:{digest.hexdigest()}"
    if actual != descriptor.digest or size != descriptor.size:
        raise DigestError(f"blob {descriptor.digest} in {name} hashes to {actual}", name)
