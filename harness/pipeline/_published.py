"""This build against the tag its model.yaml publishes to, as that tag stands before this run
publishes: what a reviewer reads on the pull request ("RAM +120 MiB, size -3 %") before merging.

The published image is only read. An unchanged model costs one manifest and no layer: the
image config (the model ID) is compared first, since publishing adds annotations to the
manifest only. A changed one is pulled into the local store (as ``pull`` does) or read from
the OCI layout it was written to, then diffed as ``gguf-harness diff`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.distribution import Reference, RegistryClient, resolve
from harness.errors import AuthError, HarnessError, NotFoundError
from harness.expect import ModelSpec
from harness.oci import REF_NAME, layout_index, read_layout
from harness.publish import tag_for
from harness.report import Report
from harness.store import Store

from ._artifact import Artifact, artifact_of_layout, artifact_of_stored
from ._diff import Change, diff_models
from ._publish import publish_target

if TYPE_CHECKING:
    from ._session import Pipeline

__all__ = ["PublishedDiff", "diff_all_published", "diff_published"]

CHANGED, SAME, FIRST, UNAVAILABLE = "changed", "same", "first publication", "unavailable"
# What a reviewer weighs first, in this order; the rest is counted.
_HEADLINE = ("file type", "size", "BPW", "RAM", "parameters", "context length", "chat template")


@dataclass(frozen=True)
class PublishedDiff:
    """``changes`` from the published image to this build; ``note`` says why there are none
    when the published one could not be read (one line, never a failure of the run)."""

    reference: str  # "ghcr.io/o/smol:latest", "oci:out/published/smol:latest"
    state: str  # CHANGED, SAME, FIRST or UNAVAILABLE
    note: str = ""
    changes: tuple[Change, ...] = ()

    @property
    def headline(self) -> str:
        """One line: ``size -3.0 MiB (-3.1 %), BPW 5.744 -> 5.5, RAM +120.00 MiB (+4.0 %)``."""
        if self.state != CHANGED:
            return {SAME: "the same model as published", FIRST: FIRST}.get(
                self.state, f"not compared: {self.note}"
            )
        key = [c for what in _HEADLINE for c in self.changes if c.what == what]
        words = [f"{c.what} {c.delta or f'{c.before} -> {c.after}'}" for c in key]
        rest = len(self.changes) - len(key)
        if rest:
            words.append(f"{rest} other change{'s' if rest != 1 else ''}")
        return ", ".join(words)

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "state": self.state,
            "note": self.note,
            "headline": self.headline,
            "changes": [vars(change) for change in self.changes],
        }


def diff_all_published(pipeline: Pipeline, report: Report, specs: Mapping[str, ModelSpec]) -> None:
    """Each model this session built, against its published tag, onto its report record
    (before anything is published: afterwards the tag would be this build)."""
    for path, record in report.models.items():
        spec = specs.get(path)
        artifact = pipeline.produced(spec) if spec is not None else None
        found = diff_published(spec, artifact) if spec and artifact else None
        if found is not None:
            record.diff = found.to_json()


def diff_published(
    spec: ModelSpec, artifact: Artifact, store: Store | None = None
) -> PublishedDiff | None:
    """``artifact`` (this run's build of ``spec``) against the first tag it would be published
    under, in the seed's format; None when it is no build (nothing of it is published)."""
    if artifact.image is None:
        return None
    try:
        target = publish_target(spec, artifact)
    except HarnessError as error:
        return PublishedDiff(spec.name, UNAVAILABLE, f"no publish target: {error}")
    if not target.references:
        return None
    fmt = "gguf-packer" if "gguf-packer" in target.formats else target.formats[0]
    where, tag = target.references[0], tag_for(target.tags[0], fmt, target.formats)
    reference = f"{where}:{tag}"
    try:
        built = read_layout(artifact.image, artifact.tag).config_descriptor.digest
        published = _published(where, tag, built, store or Store())
    except AuthError as error:
        return PublishedDiff(reference, UNAVAILABLE, f"not authorized to read it: {error}")
    except HarnessError as error:
        return PublishedDiff(reference, UNAVAILABLE, f"cannot read it: {error}")
    if isinstance(published, str):
        return PublishedDiff(reference, published)
    try:
        result = diff_models(published, artifact, (reference, "this build"))
    except HarnessError as error:
        return PublishedDiff(reference, UNAVAILABLE, f"cannot compare with it: {error}")
    return PublishedDiff(reference, CHANGED if result.changes else SAME, changes=result.changes)


def _published(where: str, tag: str, built: str, store: Store) -> Artifact | str:
    """The published artifact; or FIRST when nothing is published there yet, SAME when its
    image config is ``built``'s (the same model, nothing more read)."""
    if where.startswith("oci:"):
        directory = Path(where[4:])
        if not (directory / "index.json").is_file():
            return FIRST
        if tag not in {(d.annotations or {}).get(REF_NAME) for d in layout_index(directory)}:
            return FIRST
        if read_layout(directory, tag).config_descriptor.digest == built:
            return SAME
        return artifact_of_layout(directory, tag)
    ref = Reference.parse(where, default_tag=None).with_tag(tag)
    with RegistryClient(ref.registry) as client:
        try:
            config = resolve(client, ref).config
        except NotFoundError:  # the manifest (or the repository): a blob missing later is not
            return FIRST
    return SAME if config.digest == built else artifact_of_stored(store.pull(str(ref)))
