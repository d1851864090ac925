"""Base images for FROM and ``--from``: an OCI layout on disk (``oci-layout://DIR[:TAG]``).

The image's files enter the content store once per manifest digest; its layers are reused as
they are, so the built image starts with the base's exact blobs.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.builder._cache import StepCache, step_key
from harness.builder._state import BaseLayer, History, StageState
from harness.builder._store import ContentStore, stamp_of
from harness.builder._tree import Node, Tree
from harness.errors import BuildError, HarnessError, Location
from harness.oci import Descriptor, Image, extract_hashed, read_layout
from harness.packerfile import OCI_LAYOUT_SCHEME

__all__ = ["BaseImages"]

# Labels a base image derived for its own build and main model: an image built FROM it derives
# its own (its creation time, its base, its main model's facts), so these are not inherited.
# A LABEL in this image's Packerfile, and --label, still set any of them.
_REDERIVED = {
    "org.opencontainers.image.created",
    "org.opencontainers.image.base.name",
    "org.opencontainers.image.base.digest",
    "org.opencontainers.image.title",
    "org.opencontainers.image.authors",
    "org.opencontainers.image.url",
    "org.opencontainers.image.description",
    "org.opencontainers.image.licenses",
}
_KEPT_MODEL_LABELS = {"gguf.model.vendor", "gguf.model.usage", "gguf.model.from"}


def _inherited(label: str) -> bool:
    if label in _REDERIVED:
        return False
    return not label.startswith("gguf.model.") or label in _KEPT_MODEL_LABELS


class BaseImages:
    def __init__(self, store: ContentStore, context: Path) -> None:
        self.store = store
        self.context = context
        self.cache = StepCache(store)
        self._states: dict[str, StageState] = {}

    def state(self, ref: str, where: Location) -> StageState:
        """The starting state of a stage built FROM ``ref``."""
        if ref not in self._states:
            self._states[ref] = self._load(ref, where)
        return self._states[ref].copy()

    def _load(self, ref: str, where: Location) -> StageState:
        if not ref.startswith(OCI_LAYOUT_SCHEME):
            raise BuildError(
                f"{ref}: the native builder reads images from OCI layouts on disk "
                f"({OCI_LAYOUT_SCHEME}DIR[:TAG]); pull registry images into one first",
                where,
            )
        location = ref[len(OCI_LAYOUT_SCHEME) :]
        path = Path(location)
        if not path.is_absolute():
            path = self.context / path
        try:
            image = read_layout(path)
        except HarnessError as error:
            raise BuildError(f"{ref}: {error}", where) from None
        inner: Mapping[str, Any] = image.config.get("config") or {}
        cmd = inner.get("Cmd")
        history = [
            History(
                str(h.get("created_by", "")),
                bool(h.get("empty_layer", False)),
                str(h.get("comment", "")),
                h["created"] if isinstance(h.get("created"), str) else None,
            )
            for h in image.config.get("history") or []
            if isinstance(h, Mapping)
        ]
        if len(image.diff_ids) != len(image.layers):
            raise BuildError(
                f"{ref}: the config lists {len(image.diff_ids)} diff_ids for "
                f"{len(image.layers)} layers",
                where,
            )
        # Unpacking the image's files (when the cache has none) checks every blob as it reads it.
        tree = self._tree(image, ref, where)
        # The layers go into the new image as they are, and the base's files may come from the
        # cache: check each blob against its digest (remembered while the file is unchanged).
        for descriptor in image.layers:
            if not self._intact(image.blob_path(descriptor.digest), descriptor):
                raise BuildError(
                    f"{ref}: layer {descriptor.digest} is missing or does not match its digest",
                    where,
                )
        layers = [
            BaseLayer(d, diff_id, image.blob_path(d.digest))
            for d, diff_id in zip(image.layers, image.diff_ids, strict=True)
        ]
        return StageState(
            tree=tree,
            layers=list(layers),
            history=history,
            labels={k: v for k, v in image.labels.items() if _inherited(k)},
            cmd=tuple(str(a) for a in cmd) if isinstance(cmd, list) else None,
            base_name=ref,
            base_digest=image.descriptor.digest,
        )

    def _intact(self, blob: Path, descriptor: Descriptor) -> bool:
        try:
            return (
                blob.stat().st_size == descriptor.size
                and self.store.digest_of(blob) == descriptor.digest
            )
        except OSError:
            return False

    def _tree(self, image: Image, ref: str, where: Location) -> Tree:
        key = step_key("image-files", image.descriptor.digest)
        files = self.cache.get(key)
        if files is None:
            scratch = self.store.scratch()
            blobs = [(image.blob_path(d.digest), d.digest) for d in image.layers]
            stamps = [stamp_of(blob) for blob, _digest in blobs]
            try:
                # One pass over each layer: its digest checked, its files written and hashed.
                extracted = extract_hashed(image, "/", scratch / "root")
                # extract() read every layer, checking its digest: _intact need not read again.
                for (blob, digest), stamp in zip(blobs, stamps, strict=True):
                    self.store.remember(blob, stamp, digest)
                files = {}
                for rel, digest in sorted(extracted.digests.items()):
                    found = (extracted.path / rel).stat()
                    files[rel] = Node(
                        self.store.adopt(extracted.path / rel, digest),
                        found.st_size,
                        found.st_mode & 0o7777,
                    )
            except HarnessError as error:
                raise BuildError(f"{ref}: {error}", where) from None
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            self.cache.put(key, files)
        return Tree(files)
