"""What a model's checks measure on its artifact: lint with every variant's args, memory
budgets, the smoke run and what it cost."""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict
from typing import Any

from harness.errors import HarnessError, HarnessWarning, Location, PackerfileError
from harness.estimate import BudgetResult, RunSettings, estimate, evaluate_budget
from harness.expect import MemorySection, ModelSpec, Subject, Variant
from harness.gguf import read_facts
from harness.packerfile import lint
from harness.smoke import ServerCommand, SmokeRun, from_stored, smoke
from harness.toolchain import parse_server_args

from ._artifact import Artifact


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


def early_template_warnings(spec: ModelSpec) -> list[tuple[Location, str]]:
    """``template_warning`` of each smoke check, at the check's line, where it is known before
    anything is built or pulled: the model's source is a GGUF file, whose header says whether
    it has a template (pytest warns at collection). Else []: known once the artifact is."""
    path = spec.source_path() if spec.source and spec.source.kind == "gguf" else None
    chat = spec.smoke is not None and any(c.kind == "chat" for c in spec.smoke.checks)
    if not chat or spec.smoke is None or path is None or not path.is_file():
        return []
    try:
        artifact = Artifact(Subject(read_facts(path), None), None, {})
    except HarnessError:
        return []  # the run says what is wrong with the file, at its own checks
    found = []
    for index, check in enumerate(spec.smoke.checks):
        caution = template_warning(spec, artifact, index)
        if caution and check.location is not None:
            found.append((check.location, caution))
    return found


def warn_at(where: Location, message: str) -> None:
    """A HarnessWarning shown at ``where``: pytest's warnings summary names that file and line
    (and quotes it); ``-W error`` makes it an error there."""
    text = HarnessWarning(f"{where}: {message}")
    warnings.warn_explicit(text, HarnessWarning, where.path or "<input>", where.line or 1)


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
