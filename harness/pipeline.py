"""One model's chain, run at most once per session and shared by all of its checks.

Producing the artifact — building the image from the model's Packerfile, or reading an already
built GGUF or image — is the expensive part. Each model's result, or the one error that stopped
it, is kept so that every check of the model sees the same artifact or fails with the same cause.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from harness.builder import BuildOptions, BuildResult, build_with
from harness.errors import (
    ArtifactError,
    HarnessError,
    PackerfileError,
    StoreError,
    UsageError,
)
from harness.estimate import BudgetResult, RunSettings, estimate, evaluate_budget
from harness.expect import MemorySection, ModelSpec, Subject, Variant, load_spec, select
from harness.gguf import read_facts
from harness.oci import in_image_relative, parse_seed_config, read_layout, unpack
from harness.packerfile import cmd_roles, lint
from harness.publish import Evidence, PublishResult, PublishSpec, publish
from harness.report import ModelRecord, Report
from harness.smoke import ServerCommand, SmokeRun, from_stored, smoke
from harness.store import Store, StoredModel
from harness.toolchain import llama_cpp_build, parse_server_args

__all__ = [
    "DEFAULT_PUBLISH_TARGET",
    "MODEL_FORMS",
    "Artifact",
    "Pipeline",
    "artifact_of_layout",
    "artifact_of_stored",
    "check_memory",
    "lint_model",
    "model_build_options",
    "produce_artifact",
    "publish_all",
    "publish_gated",
    "publish_model",
    "resolve_artifact",
    "run_record",
    "run_smoke",
    "template_warning",
]

# Where the main job publishes when model.yaml names no registry (one OCI layout per model
# below it): no outside service needed.
DEFAULT_PUBLISH_TARGET = "oci:out/published"


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
    return _artifact_of_result(build_with(options, declared=spec.build.builder))


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


def _artifact_of_result(result: BuildResult) -> Artifact:
    seed = parse_seed_config(result.config, str(result.output))
    subject = Subject(
        facts=read_facts(result.files[seed.model.cmd_value]), labels=dict(seed.labels)
    )
    return Artifact(subject, seed.cmd, dict(result.files), result.output, result.tag, result)


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
    root = unpack(image, [r.path for r in roles])
    files = {r.path: root / in_image_relative(r.path) for r in roles}
    subject = Subject(facts=read_facts(files[seed.model.cmd_value]), labels=dict(seed.labels))
    return Artifact(subject, seed.cmd, files, path, tag or image.ref_name)


def artifact_of_stored(model: StoredModel) -> Artifact:
    """A model in the local store: its files are unpacked there already, in place."""
    seed = parse_seed_config(model.config, model.reference)
    files = {r.path: model.path(r.path) for r in cmd_roles(seed.cmd)}
    subject = Subject(facts=read_facts(files[seed.model.cmd_value]), labels=dict(seed.labels))
    return Artifact(subject, seed.cmd, files, stored=model)


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


def lint_model(spec: ModelSpec) -> list[PackerfileError]:
    """The model's Packerfile linted with every set of build args it is built with (each
    variant's, or the plain build's): an ARG that only goes wrong in one variant is found."""
    variants: list[Variant | None] = [*spec.build.variants] or [None]
    return lint([spec.packerfile], arg_sets=[spec.build.args_for(v) for v in variants])


def check_memory(artifact: Artifact, memory: MemorySection, index: int) -> BudgetResult:
    """One budget of model.yaml's ``memory``: the image's Cmd settings, overridden by the
    section's, estimated for that budget's GPUs."""
    settings = RunSettings.from_cmd(artifact.cmd or ()).override(memory.settings)
    drafter = artifact.role_files("drafter")
    projector = artifact.role_files("projector")
    return evaluate_budget(
        artifact.model,
        settings,
        memory.budgets[index].budget,
        drafter=drafter[0] if drafter else None,
        projector=projector[0] if projector else None,
        adapters=artifact.role_files("adapter"),
    )


def run_smoke(spec: ModelSpec, artifact: Artifact) -> SmokeRun:
    """Every smoke check of a model against one server started as the image's Cmd says."""
    assert spec.smoke is not None
    extra = spec.smoke.server_args
    if artifact.build is not None:
        command = ServerCommand.from_build(artifact.build, extra)
    elif artifact.image is not None:
        command = ServerCommand.from_layout(artifact.image, artifact.tag, extra)
    elif artifact.stored is not None:
        command = from_stored(artifact.stored, extra)
    else:
        command = ServerCommand.from_gguf(artifact.model, extra)
    # Deterministic in CI: one thread (and the checks' own temperature 0 and fixed seed).
    threads = 1 if os.environ.get("CI") == "true" else None
    return smoke(command, spec.smoke.checks, threads=threads)


def template_warning(spec: ModelSpec, artifact: Artifact, index: int) -> str | None:
    """Why smoke check ``index`` does not test the model's own chat format, if it does not: a
    chat check against a GGUF with no chat template, and none given to llama-server, is
    answered through llama-server's fallback template (as gemma-3-270m base would be)."""
    assert spec.smoke is not None
    if spec.smoke.checks[index].kind != "chat" or artifact.subject.facts.chat_template:
        return None
    argv = [*(artifact.cmd or ()), *spec.smoke.server_args]
    given = {arg.key for arg in parse_server_args(argv).args}
    if given & {"--chat-template", "--chat-template-file"}:
        return None
    return (
        "a chat check against a model with no chat template (tokenizer.chat_template) and no"
        " --chat-template: llama-server answers through its fallback template, not the model's"
    )


def run_record(spec: ModelSpec, artifact: Artifact, run: SmokeRun) -> dict[str, Any] | None:
    """What the smoke server cost, beside the estimator's figure for the same settings."""
    if run.measurements is None:
        return None
    return {
        **asdict(run.measurements),
        "estimated_ram_bytes": estimated_ram(spec, artifact),
        "command": run.command_line,
    }


def estimated_ram(spec: ModelSpec, artifact: Artifact) -> int:
    """The estimator's host RAM for the settings the smoke server ran with (no GPU)."""
    extra = spec.smoke.server_args if spec.smoke is not None else ()
    settings = RunSettings.from_cmd([*(artifact.cmd or ()), *extra])
    return estimate(artifact.model, settings).ram


def publish_model(
    spec: ModelSpec, artifact: Artifact, report: Mapping[str, Any], raw_report: bytes
) -> PublishResult:
    """Publish one model's image if every one of its checks in ``report`` passed."""
    if artifact.image is None:
        what = "a registry image" if artifact.stored is not None else "a bare GGUF"
        return PublishResult(False, f"not published: its source is {what}, not a build")
    name = Path(artifact.image).name if artifact.image else spec.name
    # A registry the Action (or the user) names for models whose model.yaml names none.
    registry = os.environ.get("GGUF_HARNESS_REGISTRY", "").rstrip("/")
    default = f"{registry}/{spec.name}" if registry else f"{DEFAULT_PUBLISH_TARGET}/{name}"
    target = PublishSpec.from_section(
        spec.publish,
        spec.build.args_for(_variant_named(spec, artifact.tag)),
        default_target=default,
    )
    evidence = Evidence.from_report(report, str(spec.path), raw_report)
    evidence = replace(evidence, llama_cpp=llama_cpp_build().label)
    return publish(artifact.image, target, evidence, tag=artifact.tag)


def publish_gated(
    spec: ModelSpec,
    pipeline: Pipeline,
    record: ModelRecord,
    collected: Sequence[str],
    report: Mapping[str, Any],
    raw_report: bytes,
) -> bool:
    """The gate nobody bypasses by accident: publish ``spec``'s model only when every check
    ``collected`` for it ran in this run (-k, --deselect or -x leave some unrun) and passed (the
    report says); what happened goes on ``record.publish``. False if publishing itself failed."""
    ran = {item.id for item in record.items}
    unrun = [i for i in collected if i not in ran]
    if unrun:
        shown = ", ".join(i.split("::", 1)[-1] for i in unrun[:5])
        more = f" and {len(unrun) - 5} more" if len(unrun) > 5 else ""
        record.publish = {
            "published": False,
            "reason": f"not published: {len(unrun)} of its checks did not run ({shown}{more})",
        }
        return True
    try:
        result = publish_model(spec, pipeline.artifact(spec), report, raw_report)
    except HarnessError as error:
        record.publish = {"published": False, "reason": f"publishing failed: {error}"}
        return False
    record.publish = {
        "published": result.published,
        "reason": result.reason,
        "items": [asdict(item) for item in result.items],
    }
    return True


def publish_all(
    pipeline: Pipeline,
    report: Report,
    specs: Mapping[str, ModelSpec],
    collected: Mapping[str, Sequence[str]],
) -> bool:
    """Publish every model of ``report`` whose checks all ran and passed (``publish_gated``);
    False if a publish itself failed."""
    data = report.to_json()
    raw = json.dumps(data, indent=2, default=str).encode()
    ok = True
    for path, record in report.models.items():
        spec = specs.get(path)
        if spec is not None:
            ok = publish_gated(spec, pipeline, record, collected.get(path, []), data, raw) and ok
    return ok


def _variant_named(spec: ModelSpec, name: str | None) -> Variant | None:
    return next((v for v in spec.build.variants if v.name == name), None)


class Pipeline:
    """Caches each model's artifact (or the error that prevented it) by model file."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        # The build variant chosen for a model (`test --only NAME:VARIANT`), by model file.
        self.variants: dict[Path, Variant] = {}
        self._artifacts: dict[Path, Artifact | HarnessError] = {}
        self._smoke: dict[Path, SmokeRun | HarnessError] = {}

    def select(self, specs: Iterable[ModelSpec], only: str) -> set[str]:
        """The model files ``only`` (``NAME[:VARIANT]``, a cell of ``matrix``) names; the chosen
        variant of each is what this session builds. UsageError when it names nothing or
        several variants of one model."""
        chosen = select(specs, only)
        for selected in chosen:
            if selected.variant is not None:
                key = Path(selected.spec.path).resolve()
                if key in self.variants:
                    raise UsageError(f"--only {only}: pick one variant of {selected.spec.name}")
                self.variants[key] = selected.variant
        return {str(selected.spec.path) for selected in chosen}

    def artifact(self, spec: ModelSpec) -> Artifact:
        key = Path(spec.path).resolve()
        if key not in self._artifacts:
            try:
                variant = self.variants.get(key)
                self._artifacts[key] = produce_artifact(spec, self.out_dir, variant)
            except HarnessError as error:
                self._artifacts[key] = error
        outcome = self._artifacts[key]
        if isinstance(outcome, HarnessError):
            raise outcome
        return outcome

    def smoke(self, spec: ModelSpec) -> SmokeRun:
        """The model's smoke run: one server, all of its checks, done once."""
        key = Path(spec.path).resolve()
        if key not in self._smoke:
            try:
                self._smoke[key] = run_smoke(spec, self.artifact(spec))
            except HarnessError as error:
                self._smoke[key] = error
        outcome = self._smoke[key]
        if isinstance(outcome, HarnessError):
            raise outcome
        return outcome

    def subject(self, spec: ModelSpec) -> Subject:
        return self.artifact(spec).subject
