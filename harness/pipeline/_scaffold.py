"""``gguf-harness init DIR --from GGUF|IMAGE|REF``: a model directory for a model that exists.

The Packerfile packages the GGUF (or builds FROM the image) as it is; model.yaml expects the
model's own facts (each line says where its value came from), a memory budget at the estimate plus
a stated margin, and one smoke check. So the directory passes ``gguf-harness test`` at once, and
every later change to the model shows up as a failing line.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from harness._fs import atomic_write
from harness.errors import UsageError
from harness.estimate import DeviceSpec, RunSettings, estimate
from harness.gguf import GGUFFacts, read_facts
from harness.units import format_count

from ._artifact import resolve_artifact

__all__ = ["MARGIN", "init_model"]

#: What the budgets add to the estimate: room for the runtime and a slightly longer context.
MARGIN = 0.25
_GIB = 1 << 30
_MIB = 1 << 20
_CONTEXT = 4096  # the context the image's Cmd asks for, at most the model's own
_EMBEDDING_ARCHS = frozenset({"bert", "nomic-bert", "jina-bert-v2", "t5encoder", "modern-bert"})


def init_model(directory: Path, source: str) -> list[Path]:
    """Write a model directory for ``source``: a GGUF file (a Packerfile that packs it), an OCI
    layout ``DIR[:TAG]`` (a Packerfile ``FROM`` it), or a model in the store (``source: image``,
    no Packerfile); and its model.yaml. Refuses to overwrite either; returns what it wrote."""
    targets = [directory / "GGUFPackerfile", directory / "model.yaml"]
    existing = [str(t) for t in targets if t.exists()]
    if existing:
        raise UsageError(f"init: {', '.join(existing)} exists already; nothing was written")
    if (Path(source) / "model.yaml").is_file():
        raise UsageError(f"init --from {source}: a model directory already")
    if Path(source).is_file():
        facts = read_facts(source)
        name = Path(source).name
        context = min(facts.context_length or _CONTEXT, _CONTEXT)
        cmd = ["-m", f"/models/{name}", "-c", str(context)]
        weights = os.path.relpath(Path(source).resolve().parent, directory.resolve())
        # A split model is every shard: llama-server finds the others beside the first.
        shards = " ".join(Path(p).name for p in facts.paths)
        packerfile: str | None = (
            f"# {name}, packed as it is (written by `gguf-harness init`).\n"
            "FROM scratch\n"
            + (
                f"COPY --from=weights {name} /models/{name}\n"
                if len(facts.paths) == 1
                else f"COPY --from=weights {shards} /models/\n"
            )
            + f"CMD {json.dumps(cmd)}\n"
        )
        head = [
            "build:",
            "  contexts:",
            f"    weights: {weights}   # the directory holding the GGUF (COPY --from=weights)",
        ]
    else:
        artifact = resolve_artifact(source)
        facts, cmd = artifact.subject.facts, list(artifact.cmd or ())
        if artifact.image is not None:
            base = os.path.relpath(artifact.image.resolve(), directory.resolve())
            tag = f":{artifact.tag}" if artifact.tag else ""
            packerfile = (
                f"# The image {source}, as it is (written by `gguf-harness init`): its model,\n"
                "# files, labels and CMD come with it.\n"
                f"FROM oci-layout://{base}{tag}\n"
            )
            head = []
        else:
            packerfile = None  # a registry image: checked as it is, from the store
            head = ["source:", f"  image: {source}   # pulled into the local store"]
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    if packerfile is not None:
        atomic_write(targets[0], packerfile.encode())
        written.append(targets[0])
    atomic_write(targets[1], _model_yaml(facts, head, cmd).encode())
    return [*written, targets[1]]


def _model_yaml(facts: GGUFFacts, head: list[str], cmd: list[str]) -> str:
    settings = RunSettings.from_cmd(cmd)
    gpu = estimate(facts.path, settings, [DeviceSpec("GPU0", 1 << 50)])
    cpu = estimate(facts.path, settings)
    vram, ram = _budget(gpu.devices[0].total), _budget(cpu.ram)
    size_low, size_high = math.floor(facts.size * 0.99), math.ceil(facts.size * 1.01)
    lines = [
        "# yaml-language-server: $schema=https://raw.githubusercontent.com/gguf-harness/"
        "gguf-harness/main/schemas/model.schema.json",
        f"# Written by `gguf-harness init` from {Path(facts.path).name}: every value below is",
        "# that model's own, so this passes `gguf-harness test` as it is; edit what you promise.",
        "schemaVersion: 1",
        *head,
        "expect:",
        f"  architecture: {facts.architecture}   # general.architecture",
        f"  file_type: {facts.file_type}   # llama.cpp's name for it",
        f"  parameters: {format_count(facts.parameters).replace(' ', '')}"
        "   # tensor elements, to the digits written",
        f"  size: {{min: {size_low}, max: {size_high}}}   # tensor bytes {facts.size}, ±1 %",
        f"  bpw: {{min: {facts.bpw - 0.01:.2f}, max: {facts.bpw + 0.01:.2f}}}"
        f"   # bits per weight {facts.bpw:.3f}",
        f"  chat_template: {'present' if facts.chat_template else 'absent'}",
    ]
    for key, value in (
        ("context_length", facts.context_length),
        ("block_count", facts.block_count),
        ("embedding_length", facts.embedding_length),
        ("vocab_size", facts.vocab_size),
    ):
        if value is not None:
            lines.append(f"  {key}: {value}")
    if facts.tokenizer_model:
        lines.append(f"  tokenizer_model: {facts.tokenizer_model}")
    lines += [
        "  labels:   # what the build writes on the image",
        f"    gguf.model.architecture: {facts.architecture}",
        f"    gguf.model.filetype: {facts.file_type}",
        "memory:   # estimated as llama-server allocates, at the Cmd's settings",
        "  budgets:",
        f"    - {{name: gpu-{_size(vram).lower()}, vram: {_size(vram)}}}"
        f"   # full offload: {gpu.devices[0].total // _MIB} MiB + {MARGIN:.0%}",
        f"    - {{name: cpu-only, ram: {_size(ram)}, full_offload: false}}"
        f"   # host: {cpu.ram // _MIB} MiB + {MARGIN:.0%}",
        "smoke:",
        "  checks:",
        *_smoke(facts),
    ]
    return "\n".join(lines) + "\n"


def _budget(needed: int) -> int:
    """``needed`` plus the margin, rounded up: whole GiB above 1 GiB, else whole 64 MiB."""
    total = int(needed * (1 + MARGIN))
    step = _GIB if total > _GIB else 64 * _MIB
    return max(step, math.ceil(total / step) * step)


def _size(value: int) -> str:
    return f"{value // _GIB}GiB" if value % _GIB == 0 else f"{value // _MIB}MiB"


def _smoke(facts: GGUFFacts) -> list[str]:
    if facts.architecture in _EMBEDDING_ARCHS:
        return [
            "    - name: embeds",
            "      kind: embedding",
            "      input: [a first sentence, a second one]",
            f"      expect: {{dimension: {facts.embedding_length}}}",
        ]
    kind = "chat" if facts.chat_template else "completion"
    return [
        "    - name: answers",
        f"      kind: {kind}",
        "      prompt: Say hello.",
        "      max_tokens: 16",
        "      expect: {min_tokens: 1}   # it answers; say what it must answer",
    ]
