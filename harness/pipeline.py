"""One model's chain, run at most once per session and shared by all of its checks.

Producing the artifact — building the image from the model's Packerfile, or reading an already
built GGUF or image — is the expensive part. Each model's result, or the one error that stopped
it, is kept so that every check of the model sees the same artifact or fails with the same cause.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from harness.build import BuildOptions, BuildResult, build, cache_root
from harness.errors import ArtifactError, HarnessError
from harness.expect import ModelSpec, Subject
from harness.gguf import read_facts
from harness.oci import Image, extract, parse_seed_config, read_layout

__all__ = ["Pipeline", "produce_subject", "subject_of_layout"]


def produce_subject(spec: ModelSpec, out_dir: Path) -> Subject:
    """The thing a model's expectations are checked against."""
    source = spec.source
    if source is None:
        return _subject_of_build(spec, out_dir)
    path = spec.source_path()
    if source.kind == "gguf":
        assert path is not None
        if not path.is_file():
            raise ArtifactError(f"source.gguf: no such file: {path}", source.location)
        return Subject(facts=read_facts(path), labels=None)
    if source.kind == "oci-layout":
        assert path is not None
        try:
            return subject_of_layout(path, source.tag)
        except HarnessError as error:
            raise ArtifactError(f"source.image: {error}", source.location) from None
    raise ArtifactError(
        f"source.image: {source.reference}: registry images arrive with the distribution "
        "support; pull it into an OCI layout and use oci:DIR[:TAG]",
        source.location,
    )


def _subject_of_build(spec: ModelSpec, out_dir: Path) -> Subject:
    if not spec.packerfile.is_file():
        raise ArtifactError(
            f"no `source:` and no Packerfile at {spec.packerfile}: nothing to check",
            spec.location_of("packerfile") if "packerfile" in spec.doc.data else spec.location,
        )
    options = BuildOptions(
        context=spec.directory,
        output=out_dir / spec.name,
        packerfile=str(spec.packerfile.resolve()),
        build_args=spec.build.args_for(None),
        target=spec.build.target,
        contexts={name: spec.context_dir(name) for name in spec.build.contexts},
        tag="latest",
    )
    result = build(options)
    return _subject_of_result(result)


def _subject_of_result(result: BuildResult) -> Subject:
    seed = parse_seed_config(result.config, str(result.output))
    labels = seed.labels
    return Subject(facts=read_facts(result.files[seed.model.cmd_value]), labels=dict(labels))


def subject_of_layout(path: Path, tag: str | None) -> Subject:
    """A built image on disk: its main model's facts (extracted once) and its labels."""
    image = read_layout(path, tag)
    seed = parse_seed_config(image.config, str(path))
    model = _extracted(image, seed.model.cmd_value)
    return Subject(facts=read_facts(model), labels=dict(seed.labels))


def _extracted(image: Image, cmd_value: str) -> Path:
    """The model file of an image, unpacked once per manifest into the harness cache."""
    home = cache_root() / "images" / image.descriptor.digest.replace(":", "-")
    target = home / Path(cmd_value).name
    if not target.is_file():
        home.mkdir(parents=True, exist_ok=True)
        tmp = home / f".{target.name}.{os.getpid()}.tmp"
        try:
            extract(image, "/" + cmd_value.lstrip("/"), tmp)
            os.replace(tmp, target)
        finally:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
    return target


class Pipeline:
    """Caches each model's subject (or the error that prevented it) by model file."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self._subjects: dict[Path, Subject | HarnessError] = {}

    def subject(self, spec: ModelSpec) -> Subject:
        key = Path(spec.path).resolve()
        if key not in self._subjects:
            try:
                self._subjects[key] = produce_subject(spec, self.out_dir)
            except HarnessError as error:
                self._subjects[key] = error
        outcome = self._subjects[key]
        if isinstance(outcome, HarnessError):
            raise outcome
        return outcome
