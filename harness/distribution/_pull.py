"""Find the image a reference names (following an index to a platform) and fetch it verified.

``resolve`` reads manifests only; ``pull_layout`` also fetches every blob into an OCI image
layout, checking each one's size and digest, and writes the layout all or nothing (what
``skopeo copy docker://... oci:DIR`` does): refused at once when the image cannot fit the free
disk, and what a killed pull left beside the layout is swept by the next one. The store
(``harness.store``) builds on ``resolve`` and ``RegistryClient.fetch_blob``.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from harness._fs import ensure_room, owned_name, sweep_stale, try_lock
from harness.errors import DigestError, RegistryError
from harness.oci import Descriptor, LayoutWriter

from ._artifact import INDEX_TYPES, parse_descriptor
from ._client import ManifestBlob, RegistryClient
from ._download import Prefix
from ._options import RegistryOptions
from ._parallel import each
from ._reference import Reference
from ._stream import open_stream

__all__ = ["Platform", "ResolvedImage", "choose_platform", "pull_layout", "resolve"]

Platform = tuple[str, str]  # (os, architecture)
_PIECE = 1 << 20
_HASH_PIECE = 4 << 20
_MAX_DEPTH = 3


@dataclass(frozen=True)
class ResolvedImage:
    """The manifest a reference leads to, read and verified; ``reference`` carries its digest."""

    reference: Reference
    manifest: ManifestBlob
    config: Descriptor
    layers: tuple[Descriptor, ...]
    index: ManifestBlob | None  # the index it was chosen from, if any

    @property
    def annotations(self) -> dict[str, str]:
        value = self.manifest.json().get("annotations")
        return dict(value) if isinstance(value, dict) else {}

    @property
    def artifact_type(self) -> str | None:
        value = self.manifest.json().get("artifactType")
        return value if isinstance(value, str) else None


def resolve(
    client: RegistryClient, reference: str | Reference, platform: Platform = ("linux", "amd64")
) -> ResolvedImage:
    """Read the manifest ``reference`` names; an index is followed to ``platform``."""
    ref = reference if isinstance(reference, Reference) else Reference.parse(reference)
    blob = client.get_manifest(ref.repository, ref.target)
    index = None
    for _ in range(_MAX_DEPTH):
        if blob.media_type not in INDEX_TYPES:
            break
        index = blob
        document = blob.json()
        entries = [
            parse_descriptor(item, f"manifests[{i}]", str(ref))
            for i, item in enumerate(document.get("manifests") or [])
        ]
        chosen = choose_platform(entries, platform)
        if chosen is None:
            raise RegistryError("the index lists no manifests", str(ref))
        blob = client.get_manifest(ref.repository, chosen.digest)
        if blob.size != chosen.size:
            raise RegistryError(
                f"manifest {chosen.digest} is {blob.size} bytes, the index says {chosen.size}",
                str(ref),
            )
    else:
        raise RegistryError(f"indexes nested deeper than {_MAX_DEPTH}", str(ref))
    document = blob.json()
    where = f"{ref}@{blob.digest}"
    config = parse_descriptor(document.get("config"), "config", where)
    raw_layers = document.get("layers")
    if not isinstance(raw_layers, list):
        raise RegistryError("layers: missing or not a list", where)
    layers = tuple(
        parse_descriptor(item, f"layers[{i}]", where) for i, item in enumerate(raw_layers)
    )
    pinned = Reference(ref.registry, ref.repository, ref.tag, blob.digest)
    return ResolvedImage(pinned, blob, config, layers, index)


def choose_platform(entries: list[Descriptor], platform: Platform) -> Descriptor | None:
    """The entry for ``platform``; else the first that is not an attestation (BuildKit's
    ``unknown/unknown``); else the first, as the seed's consumer takes it."""

    def platform_of(entry: Descriptor) -> Mapping[str, Any]:
        return entry.platform or {}

    for entry in entries:
        found = platform_of(entry)
        if (found.get("os"), found.get("architecture")) == platform:
            return entry
    for entry in entries:
        if platform_of(entry).get("os") != "unknown":
            return entry
    return entries[0] if entries else None


def pull_layout(
    reference: str | Reference,
    dest: str | Path,
    *,
    options: RegistryOptions | None = None,
    platform: Platform = ("linux", "amd64"),
    tag: str | None = None,
    report: Callable[[str], None] | None = None,
) -> ResolvedImage:
    """Fetch the image into an OCI layout at ``dest``, tagged ``tag`` (default: the
    reference's tag). Nothing is left at ``dest`` unless every blob verified.

    Each blob is fetched into ``.DEST.part-<hex>`` beside the layout, locked while a pull uses
    it and kept when the pull is killed: the next pull hashes what it holds and asks for the
    rest only (a Range request); a partial that proves wrong is dropped and its blob fetched
    again from 0. A blob another pull is fetching at the same time goes to a private partial
    instead (``.DEST.blob-<pid>-...``, swept once its process is gone), as do the partials of
    blobs no longer asked for."""
    ref = reference if isinstance(reference, Reference) else Reference.parse(reference)
    say = report or (lambda _message: None)
    target = Path(dest).absolute()
    private, kept = f".{target.name}.blob-", f".{target.name}.part-"
    with RegistryClient(ref.registry, options) as client:
        image = resolve(client, ref, platform)
        blobs = {d.digest: d.size for d in (image.config, *image.layers)}
        sweep_stale(target.parent, private)  # a killed pull's half-fetched blob
        _sweep_partials(target.parent, kept, {f"{kept}{d.split(':', 1)[1]}" for d in blobs})
        # Each blob is fetched beside the layout and hard-linked in: the layout's size, once.
        needed = sum(blobs.values()) + image.manifest.size
        ensure_room(target.parent, needed, f"the pull of {ref} into {target}")
        target.parent.mkdir(parents=True, exist_ok=True)
        unique = list({d.digest: d for d in (image.config, *image.layers)}.values())
        fetched: list[Path] = []
        locks: list[int] = []

        def fetch(descriptor: Descriptor) -> Path:
            partial = target.parent / f"{kept}{descriptor.digest.split(':', 1)[1]}"
            lock = try_lock(partial)
            if lock is None:  # another pull fetches it now: not shared
                partial = target.parent / f"{owned_name(private)}{secrets.token_hex(6)}"
                lock = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            locks.append(lock)
            fetched.append(partial)
            with os.fdopen(lock, "r+b", closefd=False) as out:
                prefix = _prefix(out, descriptor)
                if prefix is not None and prefix.size == descriptor.size:
                    # Whole: a pull killed before it linked the blob in.
                    if f"{prefix.hash.name}:{prefix.hash.hexdigest()}" == descriptor.digest:
                        return partial
                    out.seek(0)
                    out.truncate()
                    prefix = None
                if prefix is not None:
                    say(f"resuming {descriptor.digest[:19]} at byte {prefix.size}")
                else:
                    say(f"fetching {descriptor.digest[:19]} ({descriptor.size} bytes)")
                try:
                    _fetch_into(client, ref, descriptor, out, prefix)
                except DigestError:
                    out.seek(0)
                    out.truncate()
                    if prefix is None:
                        raise
                    # What the killed run left was wrong (or the file was changed): from 0.
                    say(f"fetching {descriptor.digest[:19]} again from byte 0")
                    _fetch_into(client, ref, descriptor, out, None)
            return partial

        done = False
        try:
            with LayoutWriter(target) as writer:
                paths = each(unique, fetch, client.options.transfers, "pull")
                for descriptor, path in zip(unique, paths, strict=True):
                    writer.add_stored_blob(path, descriptor)
                stored = writer.add_blob(image.manifest.data, image.manifest.media_type)
                writer.tag(stored, tag or ref.tag or "latest")
            done = True
        finally:
            for path in fetched:
                if done or not path.name.startswith(kept):  # a kept partial waits for a rerun
                    path.unlink(missing_ok=True)
            for lock in locks:
                os.close(lock)
    return image


def _prefix(out: BinaryIO, descriptor: Descriptor) -> Prefix | None:
    """What a killed pull left in ``out``, hashed (about 1.3 GB/s; a hash's state cannot be
    saved portably); None when it holds nothing usable. ``out`` is left after the prefix."""
    have = out.seek(0, os.SEEK_END)
    if have > descriptor.size:
        have = 0
    out.seek(0)
    out.truncate(have)
    if not have:
        return None
    digest = hashlib.new(descriptor.digest.split(":", 1)[0])
    left = have
    while left and (piece := out.read(min(_HASH_PIECE, left))):
        digest.update(piece)
        left -= len(piece)
    return Prefix(have - left, digest)


def _fetch_into(
    client: RegistryClient,
    ref: Reference,
    descriptor: Descriptor,
    out: BinaryIO,
    prefix: Prefix | None,
) -> None:
    # Received and hashed in one thread, written in this one: the two overlap.
    def fetch_into(into: BinaryIO) -> None:
        client.fetch_blob(ref.repository, descriptor, into, prefix)

    offset = prefix.size if prefix is not None else 0
    with open_stream(fetch_into, descriptor.digest[:19], offset) as stream:
        while piece := stream.read(_PIECE):
            out.write(piece)
    out.flush()
    os.fsync(out.fileno())


def _sweep_partials(folder: Path, prefix: str, wanted: set[str]) -> None:
    """Remove the kept partials of blobs this pull does not ask for (bounded disk), unless
    another pull holds one now."""
    try:
        entries = [e for e in folder.iterdir() if e.name.startswith(prefix)]
    except OSError:
        return
    for entry in entries:
        if entry.name in wanted or (lock := try_lock(entry)) is None:
            continue
        entry.unlink(missing_ok=True)
        os.close(lock)
