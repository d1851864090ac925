"""Publish a tested model: gate on its results, convert to the formats asked for, push each to
every reference and tag, and attach the JSON report as a referrer.

Targets are registry repositories (``127.0.0.1:5000/smollm2``) or OCI layout directories
(``oci:out/published``, the local default when model.yaml names no registry). Tags: the first
format listed gets each tag as is; the others get a suffix (``-modelpack``, ``-dmr``), so
``0.5b-q4`` is the seed's image and ``0.5b-q4-modelpack`` its ModelPack artifact.

The disk a publish takes (the image's files a conversion needs, unpacked once into the harness
cache, and what an OCI layout target cannot hard-link) is checked before anything is written.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness._fs import ensure_room
from harness.distribution import (
    Artifact,
    Reference,
    RegistryClient,
    RegistryOptions,
    attach,
    list_referrers,
    push,
    referrer_artifact,
)
from harness.errors import PublishError
from harness.oci import Image, is_unpacked, read_layout, unpack_root

from ._dmr import dmr_artifact
from ._evidence import Evidence
from ._facts import model_facts
from ._files import extract_files
from ._layout_target import write_layout_target
from ._modelpack import modelpack_artifact
from ._seed_image import seed_artifact
from ._spec import FORMATS, Published, PublishResult, PublishSpec, tag_for

__all__ = ["REPORT_ARTIFACT_TYPE", "publish"]

REPORT_ARTIFACT_TYPE = "application/vnd.io.github.gguf-harness.report.v1+json"
REPORT_MEDIA_TYPE = "application/json"

Report = Callable[[str], None]
# Manifests, configs, index.json and the report: never near this much.
_METADATA_ROOM = 1 << 20


def publish(
    layout: str | Path,
    spec: PublishSpec,
    evidence: Evidence,
    *,
    tag: str | None = None,
    options: RegistryOptions | None = None,
    report: Report | None = None,
) -> PublishResult:
    """Publish the image tagged ``tag`` in ``layout`` as ``spec`` says, if ``evidence`` passed.

    A model with a failed, skipped or errored check is not published; the result says why.
    """
    say = report or (lambda _message: None)
    if not evidence.passed:
        failed = ", ".join(evidence.failures[:5]) + (" ..." if len(evidence.failures) > 5 else "")
        why = f"{len(evidence.failures)} of {evidence.checks} checks did not pass ({failed})"
        return PublishResult(
            False, "not published: " + (why if evidence.checks else "no checks ran")
        )
    unknown = [f for f in spec.formats if f not in FORMATS]
    if unknown or not spec.formats:
        raise PublishError(f"unknown publish format(s) {unknown}; known: {', '.join(FORMATS)}")
    if not spec.references:
        raise PublishError("no publish reference given (a registry repository or oci:DIR)")
    annotations = {**spec.annotations, **evidence.annotations()}
    image = read_layout(layout, tag)
    _check_room(Path(layout), image, spec)
    artifacts = _convert(Path(layout), image, spec.formats, annotations)
    items: list[Published] = []
    registry_refs: list[Reference] = []
    for target in spec.references:
        if target.startswith("oci:"):
            items += write_layout_target(
                Path(target[4:]), artifacts, spec, evidence, REPORT_ARTIFACT_TYPE
            )
            continue
        ref = Reference.parse(target, default_tag=None)
        if ref.tag or ref.digest:
            raise PublishError(f"publish reference {target!r} names a tag; give tags apart")
        mount_from = [str(r.name) for r in registry_refs if r.registry == ref.registry]
        items += _push_all(ref, artifacts, spec, evidence, options, mount_from, say)
        registry_refs.append(ref)
    return PublishResult(True, None, tuple(items))


def _check_room(layout: Path, image: Image, spec: PublishSpec) -> None:
    """Refuse before a byte is written when a file system lacks the room: the harness cache
    gets the image's files (once per image: harness.oci.unpack) when a format needs them; an OCI
    layout target gets hard links to the layout's blobs and those files where it shares their
    file system, else copies."""
    converted = any(fmt != "gguf-packer" for fmt in spec.formats)
    work = unpack_root(image.descriptor.digest)
    files = _files_floor(image) if converted else 0
    if converted and is_unpacked(image.descriptor.digest):
        files = 0
    blobs = image.config_descriptor.size + sum(d.size for d in image.layers)
    demands: dict[int, tuple[Path, int]] = {}

    def need(where: Path, size: int) -> None:
        device = _device(where)
        first, total = demands.get(device, (where, 0))
        demands[device] = (first, total + size)

    need(work, files)
    for target in spec.references:
        if not target.startswith("oci:"):
            continue  # a registry's disk is not ours to check
        dest = Path(target[4:]).absolute()
        size = _METADATA_ROOM
        if "gguf-packer" in spec.formats and _device(dest) != _device(layout):
            size += blobs
        if converted and _device(dest) != _device(work):
            size += files
        need(dest.parent, size)
    names = ", ".join(t for t in spec.references if t.startswith("oci:"))
    for where, size in demands.values():
        ensure_room(where, size, f"publishing {layout}" + (f" to {names}" if names else ""))


def _files_floor(image: Image) -> int:
    """The bytes extracting the image's files writes, as far as they are known before: its
    layers' sizes (weights hardly compress), or the GGUF bytes its config declares if more."""
    layers = sum(d.size for d in image.layers)
    return max(layers, _declared_size(image.config))


def _declared_size(config: Mapping[str, Any]) -> int:
    inner = config.get("config")
    size = inner.get("Size") if isinstance(inner, Mapping) else None
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else 0


def _device(path: Path) -> int:
    while not path.exists() and path != path.parent:
        path = path.parent
    return os.stat(path).st_dev


def _convert(
    layout: Path, image: Image, formats: Sequence[str], annotations: Mapping[str, str]
) -> dict[str, Artifact]:
    artifacts: dict[str, Artifact] = {}
    files = facts = None
    for fmt in formats:
        if fmt == "gguf-packer":
            artifacts[fmt] = seed_artifact(layout, image, annotations)
            continue
        if files is None or facts is None:
            files, facts = extract_files(image), model_facts(image)
        if fmt == "modelpack":
            artifacts[fmt] = modelpack_artifact(files, facts, annotations)
        else:
            artifacts[fmt] = dmr_artifact(files, facts, annotations)
    return artifacts


def _push_all(
    ref: Reference,
    artifacts: Mapping[str, Artifact],
    spec: PublishSpec,
    evidence: Evidence,
    options: RegistryOptions | None,
    mount_from: Sequence[str],
    say: Report,
) -> list[Published]:
    items: list[Published] = []
    with RegistryClient(ref.registry, options) as client:
        for fmt, artifact in artifacts.items():
            reported: str | None = None
            for tag in spec.tags:
                target = ref.with_tag(tag_for(tag, fmt, spec.formats))
                result = push(artifact, target, client=client, mount_from=mount_from, report=say)
                if reported is None and evidence.report is not None:
                    reported = _attach_report(client, ref.repository, artifact, evidence.report)
                published = Published(
                    str(target), fmt, artifact.digest, result.bytes_sent, result.changed, reported
                )
                items.append(published)
    return items


def _attach_report(
    client: RegistryClient, repository: str, artifact: Artifact, report: bytes
) -> str:
    subject = artifact.descriptor()
    if list_referrers(client, repository, subject.digest, REPORT_ARTIFACT_TYPE):
        return "kept"  # the same model already carries a report: re-publishing sends nothing
    referrer = referrer_artifact(
        subject,
        REPORT_ARTIFACT_TYPE,
        report,
        REPORT_MEDIA_TYPE,
        annotations={"org.opencontainers.image.title": "gguf-harness-report.json"},
    )
    return attach(client, repository, subject, referrer).via
