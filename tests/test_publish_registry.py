"""Publishing to a real registry on loopback, read back by real peers (skopeo, oras-py, our
store): the three formats, the test results, the report as a referrer, and a re-publish of an
unchanged model that writes nothing to the registry (counted in the registry's access log)."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.builder import BuildOptions, build
from harness.distribution import (
    RegistryClient,
    RegistryOptions,
    list_referrers,
    parse_descriptor,
)
from harness.publish import (
    MODELPACK_ARTIFACT_TYPE,
    PREFIX,
    REPORT_ARTIFACT_TYPE,
    Evidence,
    PublishResult,
    PublishSpec,
    publish,
    validate_modelpack_config,
)
from harness.store import Store
from tests.gguf_files import smollm2_path, write_model
from tests.services import Registry

pytestmark = [
    pytest.mark.component("registry"),
    pytest.mark.component("skopeo"),
    pytest.mark.usefixtures("no_user_credentials"),
]

PLAIN = RegistryOptions(insecure=True)
FORMATS = ("gguf-packer", "modelpack", "docker-model-runner")
_WRITES = re.compile(r'"(PUT|PATCH|POST|DELETE) /v2/')


def skopeo_raw(ref: str) -> dict[str, object]:
    binary = shutil.which("skopeo")
    if binary is None:
        pytest.skip("skopeo is not installed (scripts/setup.sh installs it)")
    done = subprocess.run(
        [binary, "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    value: dict[str, object] = json.loads(done.stdout)
    return value


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real SmolLM2 when installed (98 MB), else a synthesized tiny GGUF."""
    work = tmp_path_factory.mktemp("publish-registry")
    context = work / "context"
    context.mkdir()
    real = smollm2_path()
    contexts = {}
    if real is not None:  # reached through a named build context, as models/smollm2 does
        contexts["smollm2"] = real.parent
        source = f"--from=smollm2 {real.name}"
    else:
        write_model(context / "model.gguf")
        source = "model.gguf"
    (context / "GGUFPackerfile").write_text(
        f"FROM scratch\nCOPY {source} /models/model.gguf\n"
        'CMD ["-m", "/models/model.gguf", "-c", "2048"]\n'
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GGUF_HARNESS_CACHE", str(work / "cache"))
        options = BuildOptions(context=context, output=work / "layout", tag="v1", contexts=contexts)
        return build(options).output


def _source(layout: Path) -> bytes:
    real = smollm2_path()
    return (real or layout.parent / "context" / "model.gguf").read_bytes()


def _writes(registry: Registry) -> int:
    return len(_WRITES.findall(registry.log.read_text(errors="replace")))


REPORT = json.dumps({"format": 1, "passed": True, "models": []}).encode()
EVIDENCE = Evidence(
    True, checks=7, llama_cpp="0c1e570", memory={"8GiB": "210 MiB"}, smoke="passed", report=REPORT
)


@pytest.fixture(scope="module")
def published(registry: Registry, layout: Path) -> tuple[PublishSpec, PublishResult]:
    spec = PublishSpec((f"{registry.host}/pub/smol",), ("q4", "latest"), {}, FORMATS)
    return spec, publish(layout, spec, EVIDENCE, options=PLAIN)


def test_three_formats_with_results_and_report(
    registry: Registry, published: tuple[PublishSpec, PublishResult]
) -> None:
    _spec, result = published
    assert result.published and len(result.items) == 6
    assert {item.report for item in result.items} == {"tag-schema"}

    seed = skopeo_raw(f"{registry.host}/pub/smol:q4")
    annotations = seed["annotations"]
    assert isinstance(annotations, dict)
    assert annotations[PREFIX + "tests.passed"] == "true"
    assert annotations[PREFIX + "smoke"] == "passed"
    assert annotations[PREFIX + "memory.8gib"] == "210 MiB"

    modelpack = skopeo_raw(f"{registry.host}/pub/smol:q4-modelpack")
    assert modelpack["artifactType"] == MODELPACK_ARTIFACT_TYPE
    layers = modelpack["layers"]
    assert isinstance(layers, list)
    assert layers[0]["annotations"]["org.cncf.model.filepath"] == "models/model.gguf"
    dmr = skopeo_raw(f"{registry.host}/pub/smol:q4-dmr")
    config = dmr["config"]
    assert isinstance(config, dict)
    assert config["mediaType"] == "application/vnd.docker.ai.model.config.v0.1+json"
    # ModelPack and Docker share the raw GGUF blob: the same digest, sent once.
    assert layers[0]["digest"] == dmr["layers"][0]["digest"]  # type: ignore[index]

    with RegistryClient(registry.host, PLAIN) as client:
        blob = io.BytesIO()
        client.fetch_blob("pub/smol", parse_descriptor(modelpack["config"], "config", "-"), blob)
        validate_modelpack_config(json.loads(blob.getvalue()))
        subject = next(i for i in result.items if i.format == "modelpack").digest
        [referrer] = list_referrers(client, "pub/smol", subject, REPORT_ARTIFACT_TYPE)
        manifest = client.get_manifest("pub/smol", referrer.digest).json()
        payload = io.BytesIO()
        client.fetch_blob("pub/smol", parse_descriptor(manifest["layers"][0], "l", "-"), payload)
        assert payload.getvalue() == REPORT


def test_store_pulls_every_format(
    registry: Registry,
    layout: Path,
    published: tuple[PublishSpec, PublishResult],
    tmp_path: Path,
) -> None:
    source = hashlib.sha256(_source(layout)).hexdigest()
    store = Store(tmp_path / "store")
    for tag in ("q4", "q4-modelpack", "q4-dmr"):
        model = store.pull(f"{registry.host}/pub/smol:{tag}", options=PLAIN)
        assert model.model_file is not None
        assert hashlib.sha256(model.model_file.read_bytes()).hexdigest() == source
        assert model.command()[:2] == ["-m", str(model.model_file)]
    rows = store.rows()
    assert {row.arch for row in rows} == {"llama"}
    assert {row.format for row in rows} == set(FORMATS)


def test_republishing_an_unchanged_model_writes_nothing(
    registry: Registry, layout: Path, published: tuple[PublishSpec, PublishResult]
) -> None:
    spec, _result = published
    before = _writes(registry)
    again = publish(layout, spec, EVIDENCE, options=PLAIN)
    assert again.published and again.bytes_sent == 0
    assert not any(item.changed for item in again.items)
    assert {item.report for item in again.items} == {"kept"}
    assert _writes(registry) == before  # not one PUT, PATCH or POST reached the registry


def test_a_failed_model_is_not_pushed(registry: Registry, layout: Path) -> None:
    failed = Evidence(False, checks=2, failures=("model.yaml::smoke::chat",))
    spec = PublishSpec((f"{registry.host}/pub/failed",), ("v1",), {}, FORMATS)
    before = _writes(registry)
    result = publish(layout, spec, failed, options=PLAIN)
    assert not result.published and "model.yaml::smoke::chat" in (result.reason or "")
    assert _writes(registry) == before
    with RegistryClient(registry.host, PLAIN) as client:
        assert client.tags("pub/failed") == []


def test_oras_reads_our_modelpack_artifact(
    registry: Registry,
    layout: Path,
    published: tuple[PublishSpec, PublishResult],
    tmp_path: Path,
) -> None:
    oras_provider = pytest.importorskip("oras.provider")
    client = oras_provider.Registry(registry.host, insecure=True)
    target = f"{registry.host}/pub/smol:q4-modelpack"
    assert client.get_manifest(target)["artifactType"] == MODELPACK_ARTIFACT_TYPE
    files = client.pull(target=target, outdir=str(tmp_path / "oras"))
    assert [Path(f).read_bytes() for f in files] == [_source(layout)]
