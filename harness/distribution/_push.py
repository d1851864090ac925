"""Push an artifact (manifest or index with its blobs) to a registry, sending only what is new.

Order matters for a registry's consistency checks: blobs before the manifest that names them,
an index's manifests before the index. For each blob: HEAD (present: skip), else a cross-repo
mount from each candidate repository of the same registry, else an upload. A tag that already
points at the same manifest digest makes the whole push a no-op, without a single blob request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import RegistryError
from harness.oci import Descriptor

from ._artifact import Artifact
from ._client import RegistryClient
from ._options import RegistryOptions
from ._parallel import each
from ._reference import Reference
from ._transfer import BlobSource

__all__ = ["PushResult", "push", "push_layout"]

Report = Callable[[str], None]


@dataclass(frozen=True)
class PushResult:
    """What one push did. ``reference`` carries the tag and the pushed digest."""

    reference: Reference
    descriptor: Descriptor
    uploaded: tuple[str, ...] = ()  # blob digests sent
    mounted: tuple[str, ...] = ()  # blob digests linked from another repository
    present: tuple[str, ...] = ()  # blob digests the repository already had
    bytes_sent: int = 0  # blob bytes on the wire, resends included
    manifests_put: int = 0

    @property
    def changed(self) -> bool:
        """False when the registry already held exactly this (a re-publish of the same model)."""
        return bool(self.uploaded or self.mounted or self.manifests_put)


@dataclass
class _Tally:
    uploaded: list[str] = field(default_factory=list)
    mounted: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    manifests_put: int = 0
    done: set[str] = field(default_factory=set)


def push(
    artifact: Artifact,
    reference: str | Reference,
    *,
    client: RegistryClient | None = None,
    options: RegistryOptions | None = None,
    mount_from: Sequence[str] = (),
    report: Report | None = None,
) -> PushResult:
    """Push ``artifact`` to ``reference`` (``registry/repo:tag``, or ``@digest`` for no tag).

    ``mount_from`` names other repositories of the same registry that may hold the blobs (an
    earlier publish of the same model under another name): the registry links them instead of
    receiving them again.
    """
    ref = reference if isinstance(reference, Reference) else Reference.parse(reference)
    if ref.digest is not None and ref.digest != artifact.digest:
        raise RegistryError(f"the artifact is {artifact.digest}, not {ref.digest}", str(ref))
    say = report or (lambda _message: None)
    own = client is None
    active = client or RegistryClient(ref.registry, options)
    try:
        target = ref.tag or artifact.digest
        current = active.head_manifest(ref.repository, target)
        tally = _Tally()
        if current is None or current.digest != artifact.digest:
            sources = _same_registry(ref, mount_from)
            _push_tree(active, ref.repository, artifact, sources, tally, say)
            active.put_manifest(ref.repository, target, artifact.data, artifact.media_type)
            tally.manifests_put += 1
            say(f"pushed {ref.name}:{target} ({artifact.digest})")
        else:
            say(f"{ref.name}:{target} is up to date ({artifact.digest})")
    finally:
        if own:
            active.close()
    return PushResult(
        Reference(ref.registry, ref.repository, ref.tag, artifact.digest),
        artifact.descriptor(),
        tuple(tally.uploaded),
        tuple(tally.mounted),
        tuple(tally.present),
        tally.bytes_sent,
        tally.manifests_put,
    )


def push_layout(
    layout: str | Path,
    reference: str | Reference,
    *,
    tag: str | None = None,
    options: RegistryOptions | None = None,
    mount_from: Sequence[str] = (),
    report: Report | None = None,
) -> PushResult:
    """Push the image tagged ``tag`` in an OCI layout (the only one when None): ``push DIR REF``."""
    return push(
        Artifact.from_layout(layout, tag),
        reference,
        options=options,
        mount_from=mount_from,
        report=report,
    )


def _same_registry(ref: Reference, candidates: Sequence[str]) -> list[str]:
    """Repository names of ``candidates`` (repositories or references) on ``ref``'s registry."""
    found: list[str] = []
    for text in candidates:
        first = text.split("/", 1)[0]
        names_host = "/" in text and ("." in first or ":" in first or first == "localhost")
        other = Reference.parse(text if names_host else f"{ref.registry}/{text}", default_tag=None)
        if other.registry == ref.registry and other.repository != ref.repository:
            found.append(other.repository)
    return list(dict.fromkeys(found))


def _push_tree(
    client: RegistryClient,
    repository: str,
    artifact: Artifact,
    mount_from: Sequence[str],
    tally: _Tally,
    say: Report,
) -> None:
    for child in artifact.children:
        if child.digest in tally.done:
            continue
        if client.head_manifest(repository, child.digest) is None:
            _push_tree(client, repository, child, mount_from, tally, say)
            client.put_manifest(repository, child.digest, child.data, child.media_type)
            tally.manifests_put += 1
        tally.done.add(child.digest)
    todo = [(d, s) for digest, (d, s) in artifact.blobs.items() if digest not in tally.done]
    tally.done.update(descriptor.digest for descriptor, _ in todo)

    def one(item: tuple[Descriptor, BlobSource]) -> tuple[str, int]:
        return _push_blob(client, repository, item[0], item[1], mount_from, say)

    # Several blobs at once (the shards of a split model, a model and its projector): each
    # waits on its own round trips and hashing on the registry's side.
    outcomes = each(todo, one, client.options.transfers, "push")
    for (descriptor, _), (outcome, sent) in zip(todo, outcomes, strict=True):
        getattr(tally, outcome).append(descriptor.digest)
        tally.bytes_sent += sent


def _push_blob(
    client: RegistryClient,
    repository: str,
    descriptor: Descriptor,
    source: BlobSource,
    mount_from: Sequence[str],
    say: Report,
) -> tuple[str, int]:
    """``("present" | "mounted" | "uploaded", bytes sent)`` for one blob."""
    digest = descriptor.digest
    size = client.blob_size(repository, digest)
    if size is not None:
        if size not in (-1, descriptor.size):
            raise RegistryError(
                f"the registry holds blob {digest} with {size} bytes, "
                f"its descriptor says {descriptor.size}",
                f"{client.registry}/{repository}",
            )
        client.forget_upload(repository, digest)  # a session a stopped run left: not needed
        return "present", 0
    if any(
        source_repo != repository and client.mount_blob(repository, digest, source_repo)
        for source_repo in mount_from
    ):
        client.forget_upload(repository, digest)
        say(f"mounted {digest[:19]} from another repository")
        return "mounted", 0
    say(f"uploading {digest[:19]} ({descriptor.size} bytes)")
    return "uploaded", client.upload_blob(repository, descriptor, source, say)
