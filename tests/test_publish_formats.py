"""Converting a built model image to the publish formats, gating on results, and the local
(OCI layout) target; no registry needed."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.builder import BuildOptions, build
from harness.errors import Location
from harness.expect import PublishSection
from harness.oci import read_layout
from harness.publish import (
    DMR_CONFIG,
    MODELPACK_ARTIFACT_TYPE,
    MODELPACK_CONFIG,
    PREFIX,
    Evidence,
    PublishError,
    PublishSpec,
    dmr_config,
    extract_files,
    model_facts,
    modelpack_config,
    param_size,
    publish,
    seed_artifact,
    validate_modelpack_config,
)
from harness.report import ItemRecord, Report
from harness.store import Store
from tests.gguf_files import write_model

PASSED = Evidence(
    True, checks=4, llama_cpp="0c1e570", memory={"RAM 8GiB": "1.2 GiB"}, smoke="passed"
)
FORMATS = ("gguf-packer", "modelpack", "docker-model-runner")
PACKERFILE = """\
FROM scratch
COPY model.gguf /models/
CAT <<EOF /models/README.md
A tiny test model.
EOF
CAT <<EOF /models/LICENSE
Apache-2.0
EOF
CAT <<EOF /models/template.jinja
{{ messages }}
EOF
CMD ["-m", "/models/model.gguf", "-c", "512", "--chat-template-file", "/models/template.jinja"]
"""


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("publish")
    context = work / "context"
    context.mkdir()
    write_model(context / "model.gguf")
    (context / "GGUFPackerfile").write_text(PACKERFILE)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GGUF_HARNESS_CACHE", str(work / "cache"))
        return build(BuildOptions(context=context, output=work / "layout", tag="v1")).output


def test_modelpack_config_validates_against_the_schema(layout: Path, tmp_path: Path) -> None:
    image = read_layout(layout)
    files, facts = extract_files(image), model_facts(image)
    config = modelpack_config(files, facts)
    validate_modelpack_config(config)
    assert config["config"]["format"] == "gguf" and config["config"]["quantization"] == "q8_0"
    assert config["config"]["paramSize"] == "37.6K"
    assert config["descriptor"]["family"] == "llama"
    assert config["descriptor"]["name"] == "Tiny Test Llama"
    assert config["modelfs"]["diffIds"][0] == files.by_role("model")[0].digest
    assert [f.role for f in files.files] == ["model", "chat-template", "doc", "doc"]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(config: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            config = config[key]
        if value is None:
            del config[last]
        else:
            config[last] = value

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set("config.paramSize", "37.57 K"), "paramSize"),
        (_set("extra", 1), "Additional properties"),
        (_set("modelfs", None), "'modelfs' is a required property"),
        (_set("modelfs.diffIds", ["md5:x"]), "diffIds"),
        (_set("descriptor.createdAt", "yesterday"), "createdAt"),
    ],
)
def test_schema_rejects_what_modelpack_does_not_allow(
    layout: Path, tmp_path: Path, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    image = read_layout(layout)
    config = modelpack_config(extract_files(image), model_facts(image))
    change(config)
    with pytest.raises(PublishError, match=message):
        validate_modelpack_config(config)


def test_docker_model_runner_config(layout: Path, tmp_path: Path) -> None:
    image = read_layout(layout)
    files = extract_files(image)
    config = dmr_config(files, model_facts(image))
    inner = config["config"]
    assert (inner["format"], inner["quantization"]) == ("gguf", "Q8_0")
    assert inner["architecture"] == "llama"
    assert inner["parameters"] == "37.57K" and inner["context_size"] == 512
    assert inner["gguf"]["general.architecture"] == "llama"
    assert config["rootfs"]["type"] == "rootfs"
    # model, chat template and license: what Docker has media types for (not the README).
    assert len(config["rootfs"]["diff_ids"]) == 3


def test_seed_image_keeps_its_config_and_gains_annotations(layout: Path) -> None:
    image = read_layout(layout)
    artifact = seed_artifact(layout, image, PASSED.annotations())
    manifest = artifact.json()
    assert manifest["config"]["digest"] == image.config_descriptor.digest  # same model ID
    assert manifest["annotations"][PREFIX + "tests.passed"] == "true"
    assert manifest["annotations"][PREFIX + "memory.ram-8gib"] == "1.2 GiB"
    assert manifest["annotations"][PREFIX + "llama-cpp"] == "0c1e570"
    assert seed_artifact(layout, image, PASSED.annotations()).digest == artifact.digest


def test_failed_model_is_not_published(layout: Path, tmp_path: Path) -> None:
    failed = Evidence(False, checks=3, failures=("m.yaml::expect::size",))
    spec = PublishSpec((f"oci:{tmp_path / 'out'}",), ("v1",))
    result = publish(layout, spec, failed)
    assert not result.published and not result.items
    assert result.reason is not None and "m.yaml::expect::size" in result.reason
    assert not (tmp_path / "out").exists()


def test_evidence_from_the_harness_report() -> None:
    report = Report()
    record = report.model("models/tiny/model.yaml", "tiny")
    record.items += [
        ItemRecord("a::expect::arch", "expect", "arch", "model.yaml:3", "passed", 0.1),
        ItemRecord(
            "a::memory::8g",
            "memory",
            "8GiB",
            "model.yaml:9",
            "passed",
            0.2,
            actual={"GPU0": 1 << 30, "estimate": {"arch": "llama"}},
            message="8GiB: fits: GPU0 1.00 GiB of 8.00 GiB",
        ),
        ItemRecord("a::smoke::chat", "smoke", "chat", "model.yaml:12", "passed", 3.0),
    ]
    raw = json.dumps(report.to_json()).encode()
    evidence = Evidence.from_report(report.to_json(), "tiny", raw)
    assert evidence.passed and evidence.checks == 3 and evidence.smoke == "passed"
    # The one-line verdict, not the whole estimate, goes into the annotations.
    assert evidence.memory == {"8GiB": "8GiB: fits: GPU0 1.00 GiB of 8.00 GiB"}
    assert evidence.report == raw
    record.items.append(ItemRecord("a::smoke::x", "smoke", "x", "model.yaml:14", "skipped", 0))
    evidence = Evidence.from_report(report.to_json(), "models/tiny/model.yaml")
    assert not evidence.passed and evidence.failures == ("a::smoke::x",)
    assert evidence.smoke == "failed"


@pytest.mark.parametrize(
    ("count", "expected"),
    [(134_515_008, "134.5M"), (8_030_261_248, "8B"), (494_032_768, "494M"), (37_568, "37.6K")],
)
def test_param_size(count: int, expected: str) -> None:
    assert param_size(count) == expected


def test_local_layout_target(layout: Path, tmp_path: Path) -> None:
    out = tmp_path / "published"
    evidence = Evidence(True, checks=1, report=b'{"passed": true}')
    spec = PublishSpec((f"oci:{out}",), ("v1", "latest"), {"org.example": "x"}, FORMATS)
    result = publish(layout, spec, evidence)
    assert result.published
    assert {i.reference.rsplit(":", 1)[1] for i in result.items} == {
        "v1", "latest", "v1-modelpack", "latest-modelpack", "v1-dmr", "latest-dmr",
    }  # fmt: skip
    modelpack = read_layout(out, "v1-modelpack")
    assert modelpack.manifest["artifactType"] == MODELPACK_ARTIFACT_TYPE
    assert modelpack.config_descriptor.media_type == MODELPACK_CONFIG
    validate_modelpack_config(modelpack.config)
    assert read_layout(out, "v1-dmr").config_descriptor.media_type == DMR_CONFIG
    seed = read_layout(out, "v1")
    assert seed.manifest["annotations"]["org.example"] == "x"
    names = {
        m["annotations"]["org.opencontainers.image.ref.name"]
        for m in json.loads((out / "index.json").read_text())["manifests"]
    }
    assert "sha256-" + seed.descriptor.digest[7:] in names  # the report, by the tag schema
    store = Store(tmp_path / "store")
    source = (layout.parent / "context" / "model.gguf").read_bytes()
    for tag in ("v1", "v1-modelpack", "v1-dmr"):
        model = store.add_layout(out, f"127.0.0.1:1/tiny:{tag}", tag=tag)
        assert model.model_file is not None and model.model_file.read_bytes() == source
        assert model.command()[1] == str(model.model_file)
    if shutil.which("skopeo"):
        done = subprocess.run(
            ["skopeo", "inspect", "--raw", f"oci:{out}:v1-modelpack"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0 and MODELPACK_ARTIFACT_TYPE in done.stdout


def test_the_published_index_carries_each_image_platform(layout: Path, tmp_path: Path) -> None:
    """docker, containerd and skopeo choose an image from an index by its platform: the seed's
    image has one (linux/amd64, from its config); ModelPack and DMR artifacts have none."""
    out = tmp_path / "published"
    publish(layout, PublishSpec((f"oci:{out}",), ("v1",), formats=FORMATS), PASSED)
    entries = json.loads((out / "index.json").read_text())["manifests"]
    by_tag = {e["annotations"]["org.opencontainers.image.ref.name"]: e for e in entries}
    assert by_tag["v1"]["platform"] == {"architecture": "amd64", "os": "linux"}
    assert "platform" not in by_tag["v1-modelpack"] and "platform" not in by_tag["v1-dmr"]


def test_unknown_format_is_an_error(layout: Path, tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="unknown publish format"):
        publish(layout, PublishSpec((f"oci:{tmp_path}/x",), formats=("ollama",)), PASSED)


def test_spec_from_model_yaml_expands_build_args() -> None:
    section = PublishSection(
        references=("127.0.0.1:5000/qwen2",),
        tags=("${SIZE}-instruct-${QUANT}", "latest"),
        formats=("gguf-packer", "modelpack"),
        annotations={"org.opencontainers.image.source": "https://example.org"},
        location=Location("model.yaml", 1),
    )
    spec = PublishSpec.from_section(section, {"SIZE": "0.5b", "QUANT": "q4-k-m"})
    assert spec.tags == ("0.5b-instruct-q4-k-m", "latest")
    assert spec.formats == ("gguf-packer", "modelpack")
    with pytest.raises(PublishError, match="no build arg 'QUANT'"):
        PublishSpec.from_section(section, {"SIZE": "0.5b"})
    local = PublishSpec.from_section(None, default_target="oci:out/published")
    assert local == PublishSpec(("oci:out/published",))
