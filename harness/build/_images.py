"""Base images for FROM and ``--from``: an OCI layout on disk (``oci-layout://DIR[:TAG]``).

The image's files enter the content store once per manifest digest; its layers are reused as
they are, so the built image starts with the base's exact blobs.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.build._cache import StepCache, step_key
from harness.build._errors import BuildError
from harness.build._steps import BaseLayer, History, StageState
from harness.build._store import ContentStore
from harness.build._tree import Node, Tree
from harness.errors import HarnessError, Location
from harness.oci import Image, extract, read_layout
from harness.packerfile import OCI_LAYOUT_SCHEME

__all__ = ["BaseImages"]


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
            )
            for h in image.config.get("history") or []
            if isinstance(h, Mapping)
        ]
        layers = [
            BaseLayer(d, diff_id, image.blob_path(d.digest))
            for d, diff_id in zip(image.layers, image.diff_ids, strict=True)
        ]
        return StageState(
            tree=self._tree(image, ref, where),
            layers=list(layers),
            history=history,
            labels=image.labels,
            cmd=tuple(str(a) for a in cmd) if isinstance(cmd, list) else None,
            base_name=ref,
            base_digest=image.descriptor.digest,
        )

    def _tree(self, image: Image, ref: str, where: Location) -> Tree:
        key = step_key("image-files", image.descriptor.digest)
        files = self.cache.get(key)
        if files is None:
            scratch = self.store.scratch()
            try:
                root = extract(image, "/", scratch / "root")
                files = {}
                for path in sorted(
                    p for p in root.rglob("*") if p.is_file() and not p.is_symlink()
                ):
                    size = path.stat().st_size
                    mode = path.stat().st_mode & 0o7777
                    files[str(path.relative_to(root))] = Node(self.store.adopt(path), size, mode)
            except HarnessError as error:
                raise BuildError(f"{ref}: {error}", where) from None
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            self.cache.put(key, files)
        return Tree(files)
