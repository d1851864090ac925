"""The local model store: pull, import, list, inspect, remove; see _root.py for the layout.

A pull first sizes itself (``room_needed``: what the store lacks, at its peak) and refuses at
once, before creating anything, when the disk cannot hold it. It then stages everything under
``tmp/`` (blobs fetched and verified, layers unpacked and checked, the merged tree planned and
its links checked) before taking the writer lock to rename the new parts into place and rewrite
``refs.json``. Any failure before that point removes the staging directory and leaves the store
exactly as it was; a pull killed before it (``kill -9``) leaves its staging directory, which
the next pull sweeps. An uncompressed tar layer from a registry is staged apart, by digest
(``_resume``): a pull killed or cut off keeps it, and the next pull of the layer resumes it
(a refused image keeps nothing).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness._fs import ensure_room
from harness.distribution import (
    DEFAULT_TRANSFERS,
    ImageSource,
    LayoutImageSource,
    ManifestBlob,
    Platform,
    Reference,
    RegistryClient,
    RegistryError,
    RegistryImageSource,
    RegistryOptions,
    each,
    parse_descriptor,
)
from harness.errors import StoreError
from harness.oci import LABEL_PREFIX, Descriptor, OCIError, parse_seed_config

from ._collect import collect, remove_tree
from ._formats import facts, main_model, raw_file_path
from ._merge import LayerSource, RawFile, build_model, plan_model
from ._records import Collected, ModelRow, ModelSummary, StoredModel
from ._root import RefEntry, StorePaths, read_refs, store_root, write_refs
from ._staging import Staging, fetch_small, fsync_dir, relocate, room_needed, sweep_staging
from ._unpack import LayerIndex, UnpackLimits, layer_compression

__all__ = ["Store"]

Report = Callable[[str], None]
_MAX_CONFIG = 64 << 20
_CMD_ANNOTATION = LABEL_PREFIX + "cmd"


class Store:
    """The store at ``root`` (default: ``store_root()``, i.e. ``$GGUF_HARNESS_STORE``)."""

    def __init__(self, root: str | Path | None = None, *, limits: UnpackLimits | None = None):
        self.paths = StorePaths(Path(root) if root is not None else store_root())
        self.limits = limits or UnpackLimits()

    @property
    def root(self) -> Path:
        return self.paths.root

    # --- adding ---------------------------------------------------------------------------

    def pull(
        self,
        reference: str,
        *,
        options: RegistryOptions | None = None,
        platform: Platform = ("linux", "amd64"),
        report: Report | None = None,
    ) -> StoredModel:
        """Fetch ``reference`` from its registry into the store (an index is followed to
        ``platform``); every blob's digest is checked before anything is kept."""
        ref = Reference.parse(reference)
        with RegistryClient(ref.registry, options) as client:
            return self.add(RegistryImageSource(client, ref, platform), _name(ref), report)

    def add_layout(
        self, layout: str | Path, reference: str, *, tag: str | None = None
    ) -> StoredModel:
        """Import the image tagged ``tag`` of an OCI layout under the name ``reference``."""
        return self.add(LayoutImageSource(layout, tag), _name(Reference.parse(reference)))

    def add(self, source: ImageSource, name: str, report: Report | None = None) -> StoredModel:
        """Store the image ``source`` holds under the reference ``name``."""
        image = source.image()
        return self._add(
            name, image.manifest, image.index, image.config, image.layers, source,
            report or _silent,
        )  # fmt: skip

    # --- reading --------------------------------------------------------------------------

    def references(self) -> dict[str, str]:
        """Every reference and the manifest digest it names."""
        return {name: entry.manifest for name, entry in read_refs(self.paths).items()}

    def get(self, name: str) -> StoredModel:
        """The model a reference or an ID prefix (of the config digest) names."""
        refs = read_refs(self.paths)
        matches = self._match(name, refs)
        if len(matches) > 1 and len({self._config_digest(refs[m].manifest) for m in matches}) > 1:
            raise StoreError(f"{name!r} matches several models: {', '.join(sorted(matches))}")
        return self._model(matches[0], refs[matches[0]])

    def inspect(self, name: str) -> dict[str, Any]:
        """The model's config JSON (for the seed's images: the image config)."""
        return dict(self.get(name).config)

    def rows(self) -> list[ModelRow]:
        """``list``: one row per reference (the seed's columns), sorted by reference."""
        return [self._row(name, entry) for name, entry in sorted(read_refs(self.paths).items())]

    def summary(self, name: str) -> ModelSummary:
        """``inspect REF``: the seed's columns for one model, with its context, layers and
        labels (what a person reads before the full config)."""
        refs = read_refs(self.paths)
        model = self.get(name)
        row = self._row(model.reference, refs[model.reference])
        context = layers = None
        labels: dict[str, str] = {}
        with contextlib.suppress(OCIError):  # not a seed image: the columns say what is known
            seed = parse_seed_config(model.config)
            arch = seed.model.architecture
            context = _int(seed.model.metadata.get(f"{arch}.context_length"))
            layers = _int(seed.model.metadata.get(f"{arch}.block_count"))
            labels = dict(seed.labels)
        return ModelSummary(row, context, layers, labels)

    def _row(self, name: str, entry: RefEntry) -> ModelRow:
        model = self._model(name, entry)
        manifest = json.loads(self.paths.blob(entry.manifest).read_bytes())
        layers = [_descriptor(d) for d in manifest.get("layers") or []]
        found = facts(model.config_media_type, model.config, model.annotations, layers)
        ref = Reference.parse(name, default_tag=None)
        return ModelRow(
            ref.name, ref.tag or "<none>", model.config_digest, found.arch, found.params,
            found.bpw, found.type, found.usage, found.created, found.size, found.format, name,
        )  # fmt: skip

    # --- removing -------------------------------------------------------------------------

    def remove(self, name: str) -> Collected:
        """Remove a reference, or every reference to an ID prefix; then collect what no
        remaining reference uses (another tag of the same model keeps all of it)."""
        with self.paths.locked():
            refs = read_refs(self.paths)
            matches = self._match(name, refs)
            ids = {self._config_digest(refs[m].manifest) for m in matches}
            if len(ids) > 1:
                raise StoreError(f"{name!r} matches several models: {', '.join(sorted(matches))}")
            for match in matches:
                del refs[match]
            write_refs(self.paths, refs)
            swept = collect(self.paths)
        return Collected(tuple(matches), swept.blobs, swept.freed)

    def collect(self) -> Collected:
        """Delete every blob, layer and model directory no reference uses, and stale staging."""
        with self.paths.locked():
            return collect(self.paths)

    # --- internals ------------------------------------------------------------------------

    def _add(
        self,
        name: str,
        manifest: ManifestBlob,
        index: ManifestBlob | None,
        config_descriptor: Descriptor,
        layers: Sequence[Descriptor],
        source: ImageSource,
        say: Report,
    ) -> StoredModel:
        config_bytes = fetch_small(source, config_descriptor, name)
        config = _config_json(config_bytes, config_descriptor, name)
        if self.paths.tmp.is_dir():
            # What killed pulls left takes room this pull may need; the layers it is about to
            # fetch stay, to be resumed.
            wanted = {d.digest for d in layers if not self.paths.layer(d.digest).is_dir()}
            with self.paths.locked():
                sweep_staging(self.paths, wanted)
        small = [manifest.descriptor, config_descriptor]
        if index is not None:
            small.append(index.descriptor)
        needed = room_needed(self.paths, small, layers, config)
        # Before the store is created or anything staged: a pull that cannot fit leaves nothing.
        ensure_room(self.paths.root, needed, f"the pull of {name}")
        self.paths.create()
        txn = self.paths.tmp / f"{os.getpid()}-{secrets.token_hex(6)}"
        txn.mkdir()
        staged = Staging(self.paths, txn, self.limits, source, say, name)
        try:
            diff_ids = _diff_ids(config, len(layers))
            # Each distinct layer fetched (and unpacked) once, several at a time.
            unique: dict[str, int] = {}
            for number, layer in enumerate(layers):
                unique.setdefault(layer.digest, number)
            firsts = list(unique.values())

            def fetch(number: int) -> tuple[LayerIndex, Path] | Path:
                layer = layers[number]
                if layer_compression(layer.media_type) is not None:
                    return staged.layer(layer, diff_ids[number])
                return staged.raw(layer)

            fetched = dict(zip(firsts, each(firsts, fetch, DEFAULT_TRANSFERS, "pull"), strict=True))
            sources: list[LayerSource] = []
            taken: set[str] = set()
            for layer in layers:
                got = fetched[unique[layer.digest]]
                if isinstance(got, Path):
                    sources.append(RawFile(raw_file_path(layer, taken), got, layer.size))
                else:
                    sources.append(got)
            plan = plan_model(sources, name)
            staged.put_bytes(manifest.digest, manifest.data)
            staged.put_bytes(config_descriptor.digest, config_bytes)
            if index is not None:
                staged.put_bytes(index.digest, index.data)
            with self.paths.locked():
                moved = staged.commit()
                model_dir = self.paths.model(manifest.digest)
                if not model_dir.is_dir():
                    tree = txn / "model"
                    build_model({k: relocate(v, moved) for k, v in plan.items()}, tree)
                    os.rename(tree, model_dir)
                    fsync_dir(model_dir.parent)
                refs = read_refs(self.paths)
                added = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                refs[name] = RefEntry(manifest.digest, index.digest if index else None, added)
                write_refs(self.paths, refs)
                say(f"stored {name} ({manifest.digest})")
        except StoreError:
            staged.release(drop=True)
            raise
        finally:
            staged.release()
            remove_tree(txn)
        return self.get(name)

    def _match(self, name: str, refs: dict[str, RefEntry]) -> list[str]:
        if name in refs:
            return [name]
        try:
            normal = _name(Reference.parse(name))
        except RegistryError:
            normal = None
        if normal is not None and normal in refs:
            return [normal]
        prefix = name.removeprefix("sha256:").lower()
        if len(prefix) >= 4 and all(c in "0123456789abcdef" for c in prefix):
            found = [
                ref
                for ref, entry in refs.items()
                if self._config_digest(entry.manifest)[7:].startswith(prefix)
            ]
            if found:
                return sorted(found)
        raise StoreError(f"no model {name!r} in the store ({self.root})")

    def _config_digest(self, manifest_digest: str) -> str:
        manifest = json.loads(self.paths.blob(manifest_digest).read_bytes())
        return str(manifest["config"]["digest"])

    def _model(self, name: str, entry: RefEntry) -> StoredModel:
        try:
            manifest = json.loads(self.paths.blob(entry.manifest).read_bytes())
            config_descriptor = _descriptor(manifest["config"])
            config_bytes = self.paths.blob(config_descriptor.digest).read_bytes()
        except (OSError, ValueError, KeyError, TypeError):
            raise StoreError(f"{name} is damaged in the store; remove it and pull again") from None
        config = _config_json(config_bytes, config_descriptor, name)
        layers = [_descriptor(d) for d in manifest.get("layers") or []]
        taken: set[str] = set()
        raw_paths = {
            d.digest: raw_file_path(d, taken)
            for d in layers
            if layer_compression(d.media_type) is None
        }
        root = self.paths.model(entry.manifest)
        main = main_model(config_descriptor.media_type, config, raw_paths, layers)
        annotations = manifest.get("annotations")
        cmd = _cmd(config, annotations)
        return StoredModel(
            name, entry.manifest, config_descriptor.digest, config_descriptor.media_type, config,
            dict(annotations) if isinstance(annotations, dict) else {}, root,
            root / main if main else None,
            tuple(str(a) for a in cmd) if isinstance(cmd, list) else (), entry.added,
        )  # fmt: skip


def _name(ref: Reference) -> str:
    """The key a reference is stored under: ``registry/repo:tag``, or ``@digest`` when pulled
    by digest alone."""
    return str(ref)


def _config_json(data: bytes, descriptor: Descriptor, name: str) -> dict[str, Any]:
    if not descriptor.media_type.endswith("json"):
        return {}
    try:
        value = json.loads(data)
    except ValueError:
        raise StoreError(f"{name}: config {descriptor.digest} is not JSON") from None
    if not isinstance(value, dict):
        raise StoreError(f"{name}: config {descriptor.digest} is not a JSON object")
    return value


def _diff_ids(config: dict[str, Any], count: int) -> list[str | None]:
    rootfs = config.get("rootfs")
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if isinstance(ids, list) and len(ids) == count and all(isinstance(i, str) for i in ids):
        return list(ids)
    return [None] * count


def _descriptor(value: Any) -> Descriptor:
    return parse_descriptor(value, "descriptor", "store")


def _cmd(config: dict[str, Any], annotations: Any) -> list[str] | None:
    """The seed image's Cmd; for ModelPack and Docker artifacts we publish, the Cmd we keep in
    the ``io.github.gguf-harness.cmd`` annotation (same in-image paths)."""
    inner = config.get("config")
    cmd = inner.get("Cmd") if isinstance(inner, dict) else None
    if isinstance(cmd, list):
        return cmd
    kept = annotations.get(_CMD_ANNOTATION) if isinstance(annotations, dict) else None
    try:
        value = json.loads(kept) if isinstance(kept, str) else None
    except ValueError:
        return None
    return value if isinstance(value, list) else None


def _silent(_message: str) -> None:
    pass


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
