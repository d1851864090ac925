"""A model's artifact: built from its Packerfile, or read from the GGUF, OCI layout, registry
image or store entry it names; and the one resolver of every form a model is named in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harness.builder import BuildOptions, BuildResult, build_with
from harness.errors import ArtifactError, HarnessError, StoreError, UsageError
from harness.expect import ModelSpec, Subject, Variant, load_spec
from harness.gguf import read_facts, shard_names
from harness.oci import in_image_relative, parse_seed_config, read_layout, unpack
from harness.packerfile import cmd_roles
from harness.store import Store, StoredModel


@dataclass(frozen=True)
class Artifact:
    """What one model produced: the subject its expectations check, and its runnable files."""

    subject: Subject
    cmd: tuple[str, ...] | None  # the image's Cmd; None for a bare GGUF
    files: Mapping[str, Path]  # each Cmd role's path as written -> a readable file
    image: Path | None = None  # the OCI layout, when there is an image
    tag: str | None = None
    build: BuildResult | None = None  # when this session built it
    stored: StoredModel | None = None  # when it came from the local store
    # The manifest's annotations (what publishing recorded: tests, memory, quality figures).
    annotations: Mapping[str, str] = field(default_factory=dict)

    def role_files(self, kind: str) -> list[Path]:
        return [self.files[r.path] for r in cmd_roles(self.cmd or ()) if r.kind == kind]

    @property
    def model(self) -> Path:
        models = self.role_files("model")
        return models[0] if models else Path(self.subject.facts.path)


def produce_artifact(spec: ModelSpec, out_dir: Path, variant: Variant | None = None) -> Artifact:
    """Build the model (or read the artifact its ``source`` names)."""
    source = spec.source
    if source is None:
        return _artifact_of_build(spec, out_dir, variant)
    path = spec.source_path()
    if source.kind == "gguf":
        assert path is not None
        if not path.is_file():
            raise ArtifactError(f"source.gguf: no such file: {path}", source.location)
        return Artifact(Subject(facts=read_facts(path), labels=None), None, {})
    if source.kind == "oci-layout":
        assert path is not None
        try:
            return artifact_of_layout(path, source.tag)
        except HarnessError as error:
            raise ArtifactError(f"source.image: {error}", source.location) from None
    assert source.reference is not None
    try:
        # Into the local store (once: a second session finds it there), read in place.
        return artifact_of_stored(Store().pull(source.reference))
    except HarnessError as error:
        raise ArtifactError(f"source.image: {error}", source.location) from None


def _artifact_of_build(spec: ModelSpec, out_dir: Path, variant: Variant | None) -> Artifact:
    if not spec.packerfile.is_file():
        raise ArtifactError(
            f"no `source:` and no Packerfile at {spec.packerfile}: nothing to check",
            spec.location_of("packerfile") if "packerfile" in spec.doc.data else spec.location,
        )
    output = out_dir / (f"{spec.name}-{variant.name}" if variant else spec.name)
    options = model_build_options(spec, output, variant)
    return artifact_of_result(build_with(options, declared=spec.build.builder))


def model_build_options(spec: ModelSpec, output: Path, variant: Variant | None) -> BuildOptions:
    """How model.yaml says its image is built: its Packerfile, build args (of one variant),
    target and named contexts (each checked to lie inside the repository or where allowed)."""
    return BuildOptions(
        context=spec.directory,
        output=output,
        packerfile=str(spec.packerfile.resolve()),
        build_args=spec.build.args_for(variant),
        target=spec.build.target,
        contexts={name: spec.context_dir(name) for name in spec.build.contexts},
        tag=variant.name if variant else "latest",
    )


def artifact_of_result(result: BuildResult) -> Artifact:
    seed = parse_seed_config(result.config, str(result.output))
    files = dict(result.files)
    model = seed.model.cmd_value
    if len(shard_names(model)) > 1:
        # The build store names files by digest; a split model is read (and estimated) by its
        # shards' names, so it is read from the image's files, linked from that store.
        root = unpack(read_layout(result.output, result.tag), shard_names(model), have=files)
        files[model] = root / in_image_relative(model)
    subject = Subject(facts=read_facts(files[model]), labels=dict(seed.labels))
    return Artifact(subject, seed.cmd, files, result.output, result.tag, result)


def artifact_of_layout(path: Path, tag: str | None) -> Artifact:
    """A built image on disk: its GGUF roles (unpacked once per manifest) and its labels."""
    image = read_layout(path, tag)
    seed = parse_seed_config(image.config, str(path))
    roles = cmd_roles(seed.cmd)
    for role in roles:
        # The Cmd is the image's, so anyone's: "-m /" or "-m /app/.." names no file.
        if in_image_relative(role.path) in ("", ".", ".."):
            raise ArtifactError(
                f"the image's Cmd names {role.path!r} as a {role.kind}: that is not a file"
            )
    root = unpack(image, [p for r in roles for p in shard_names(r.path)])
    files = {r.path: root / in_image_relative(r.path) for r in roles}
    subject = Subject(facts=read_facts(files[seed.model.cmd_value]), labels=dict(seed.labels))
    notes = image.manifest.get("annotations")
    annotations = {str(k): str(v) for k, v in notes.items()} if isinstance(notes, dict) else {}
    return Artifact(subject, seed.cmd, files, path, tag or image.ref_name, annotations=annotations)


def artifact_of_stored(model: StoredModel) -> Artifact:
    """A model in the local store: its files are unpacked there already, in place."""
    seed = parse_seed_config(model.config, model.reference)
    files = {r.path: model.path(r.path) for r in cmd_roles(seed.cmd)}
    subject = Subject(facts=read_facts(files[seed.model.cmd_value]), labels=dict(seed.labels))
    return Artifact(subject, seed.cmd, files, stored=model, annotations=dict(model.annotations))


#: The forms every command that takes a model accepts, in the order they are tried.
MODEL_FORMS = (
    "a GGUF file",
    "a model directory (model.yaml, built into --out)",
    "an OCI layout DIR[:TAG] (also oci:DIR[:TAG], oci-layout://DIR[:TAG])",
    "a model in the local store (REF or ID; `gguf-harness pull` puts it there)",
)


def resolve_artifact(text: str, out_dir: Path = Path("out")) -> Artifact:
    """The artifact ``text`` names, in any of MODEL_FORMS; one UsageError listing them all when
    it names none."""
    path = Path(text)
    if path.is_file():
        return Artifact(Subject(read_facts(path), None), None, {})
    if path.is_dir() and (path / "model.yaml").is_file():
        return produce_artifact(load_spec(path / "model.yaml"), out_dir)
    layout = text.removeprefix("oci-layout://").removeprefix("oci:")
    directory, colon, tag = layout.rpartition(":")
    if not colon or "/" in tag:
        directory, tag = layout, ""
    if (Path(directory) / "index.json").is_file():
        return artifact_of_layout(Path(directory), tag or None)
    try:
        model = Store().get(text)
    except StoreError:
        forms = "; ".join(MODEL_FORMS)
        raise UsageError(f"{text!r} names no model: tried {forms}") from None
    return artifact_of_stored(model)
