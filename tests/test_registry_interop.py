"""Interop with real peers on loopback: what we push, skopeo reads and copies; what skopeo
pushes, we pull. Also: skipping what the registry has, cross-repository mounts, chunked
uploads, following an index to a platform, and referrers through the tag-schema fallback."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from harness.builder import BuildOptions, build
from harness.distribution import (
    Artifact,
    RegistryClient,
    RegistryOptions,
    attach,
    fallback_tag,
    list_referrers,
    pull_layout,
    push,
    push_layout,
    referrer_artifact,
    resolve,
)
from harness.oci import OCI_INDEX, LayerEntry, LayoutWriter, canonical_json, read_layout
from harness.store import Store
from tests.gguf_files import write_model
from tests.services import Registry, skopeo

pytestmark = [
    pytest.mark.component("registry"),
    pytest.mark.component("skopeo"),
    pytest.mark.usefixtures("no_user_credentials"),
]

PLAIN = RegistryOptions(insecure=True)


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seed image of a tiny GGUF, built by the native builder."""
    work = tmp_path_factory.mktemp("interop")
    context = work / "context"
    context.mkdir()
    write_model(context / "model.gguf")
    (context / "GGUFPackerfile").write_text(
        'FROM scratch\nCOPY model.gguf /models/\nCMD ["-m", "/models/model.gguf"]\n'
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GGUF_HARNESS_CACHE", str(work / "cache"))
        return build(BuildOptions(context=context, output=work / "layout", tag="v1")).output


def test_what_we_push_skopeo_reads_and_copies(
    registry: Registry, layout: Path, tmp_path: Path
) -> None:
    result = push_layout(layout, f"{registry.host}/interop/ours:v1", options=PLAIN)
    raw = skopeo(
        "inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/interop/ours:v1"
    )
    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == result.descriptor.digest
    info = json.loads(
        skopeo("inspect", "--tls-verify=false", f"docker://{registry.host}/interop/ours:v1")
    )
    assert info["Digest"] == result.descriptor.digest
    assert info["Labels"]["gguf.model.architecture"] == "llama"
    # skopeo copy checks every digest on the way; the copy is the image we built (skopeo would
    # gzip our uncompressed layers into an oci: directory without --preserve-digests).
    skopeo(
        "copy", "--preserve-digests", "--src-tls-verify=false",
        f"docker://{registry.host}/interop/ours:v1", f"oci:{tmp_path / 'copy'}:v1",
    )  # fmt: skip
    copied, built = read_layout(tmp_path / "copy", "v1"), read_layout(layout, "v1")
    assert copied.descriptor.digest == built.descriptor.digest
    assert copied.layers == built.layers


def test_what_skopeo_pushes_we_pull(registry: Registry, layout: Path, tmp_path: Path) -> None:
    built = read_layout(layout, "v1")
    for fmt in ("oci", "v2s2"):  # OCI as is, and converted to Docker schema 2
        ref = f"{registry.host}/interop/skopeo-{fmt}:v1"
        skopeo(
            "copy",
            "--dest-tls-verify=false",
            "--format",
            fmt,
            f"oci:{layout}:v1",
            f"docker://{ref}",
        )
        image = pull_layout(ref, tmp_path / f"pulled-{fmt}", options=PLAIN)
        assert [d.digest for d in image.layers] == [d.digest for d in built.layers]
        model = Store(tmp_path / "store").pull(ref, options=PLAIN)
        assert model.model_file is not None
        assert model.model_file.read_bytes() == (layout.parent / "context/model.gguf").read_bytes()
    assert image.manifest.media_type == "application/vnd.docker.distribution.manifest.v2+json"


def test_unchanged_push_sends_nothing_and_mounts_across_repositories(
    registry: Registry, layout: Path
) -> None:
    first = push_layout(layout, f"{registry.host}/interop/a:v1", options=PLAIN)
    assert first.changed and len(first.uploaded) == 2  # config and layer
    again = push_layout(layout, f"{registry.host}/interop/a:v1", options=PLAIN)
    assert not again.changed and again.bytes_sent == 0 and again.manifests_put == 0
    other = push_layout(
        layout, f"{registry.host}/interop/b:v1", options=PLAIN, mount_from=["interop/a"]
    )
    assert set(other.mounted) == set(first.uploaded) and other.bytes_sent == 0
    tagged = push_layout(layout, f"{registry.host}/interop/b:v2", options=PLAIN)
    assert set(tagged.present) == set(first.uploaded) and tagged.bytes_sent == 0


def test_loopback_registry_speaks_plain_http_without_insecure(
    registry: Registry, layout: Path, tmp_path: Path
) -> None:
    # As docker treats 127.0.0.0/8: https first, plain http when the registry does not speak TLS.
    result = push_layout(layout, f"{registry.host}/interop/loopback:v1")
    back = pull_layout(f"{registry.host}/interop/loopback:v1", tmp_path / "back")
    assert back.manifest.digest == result.descriptor.digest


def test_chunked_upload(registry: Registry, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 4096 + b"tail"  # 1 MiB and a bit: 17 chunks of 64 KiB
    with LayoutWriter(tmp_path / "layout") as writer:
        layer = writer.add_layer([LayerEntry("/m.gguf", payload)], "none")
        config = {"config": {}, "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]}}
        writer.tag(writer.add_image(config, [layer]), "v1")
    options = RegistryOptions(insecure=True, chunk_size=64 << 10)
    result = push_layout(
        tmp_path / "layout", f"{registry.host}/interop/chunked:v1", options=options
    )
    assert layer.descriptor.digest in result.uploaded
    model = Store(tmp_path / "store").pull(f"{registry.host}/interop/chunked:v1", options=PLAIN)
    assert model.path("/m.gguf").read_bytes() == payload


def _platform_image(root: Path, arch: str) -> Artifact:
    with LayoutWriter(root) as writer:
        layer = writer.add_layer([LayerEntry("/arch.txt", arch.encode())], "gzip")
        config = {
            "architecture": arch,
            "config": {},
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        }
        writer.tag(writer.add_image(config, [layer]), "v1")
    return Artifact.from_layout(root)


def test_index_is_followed_to_the_requested_platform(registry: Registry, tmp_path: Path) -> None:
    attestation = _platform_image(tmp_path / "att", "unknown")
    amd64 = _platform_image(tmp_path / "amd64", "amd64")
    arm64 = _platform_image(tmp_path / "arm64", "arm64")
    entries = [
        attestation.descriptor(platform={"architecture": "unknown", "os": "unknown"}).to_json(),
        arm64.descriptor(platform={"architecture": "arm64", "os": "linux"}).to_json(),
        amd64.descriptor(platform={"architecture": "amd64", "os": "linux"}).to_json(),
    ]
    index = Artifact(
        OCI_INDEX,
        canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}),
        {},
        (attestation, arm64, amd64),
    )
    ref = f"{registry.host}/interop/multi:v1"
    push(index, ref, options=PLAIN)
    with RegistryClient(registry.host, PLAIN) as client:
        assert resolve(client, ref).manifest.digest == amd64.digest
        assert resolve(client, ref, ("linux", "arm64")).manifest.digest == arm64.digest
        assert resolve(client, ref, ("linux", "s390x")).manifest.digest == arm64.digest
    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}"))
    assert raw["mediaType"] == OCI_INDEX and len(raw["manifests"]) == 3
    model = Store(tmp_path / "store").pull(ref, options=PLAIN)
    assert model.path("/arch.txt").read_text() == "amd64"


def test_referrers_through_the_tag_schema(registry: Registry, layout: Path) -> None:
    result = push_layout(layout, f"{registry.host}/interop/ref:v1", options=PLAIN)
    report = b'{"passed": true}'
    referrer = referrer_artifact(
        result.descriptor, "application/vnd.example.report+json", report, "application/json"
    )
    with RegistryClient(registry.host, PLAIN) as client:
        attached = attach(client, "interop/ref", result.descriptor, referrer)
        assert attached.via == "tag-schema" and attached.index_updated  # distribution 2.8
        assert not attach(client, "interop/ref", result.descriptor, referrer).index_updated
        found = list_referrers(client, "interop/ref", result.descriptor.digest)
    assert [d.digest for d in found] == [referrer.digest]
    assert found[0].artifact_type == "application/vnd.example.report+json"
    tag = fallback_tag(result.descriptor.digest)
    raw = json.loads(
        skopeo(
            "inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/interop/ref:{tag}"
        )
    )
    assert raw["manifests"][0]["artifactType"] == "application/vnd.example.report+json"
    manifest = json.loads(
        skopeo(
            "inspect",
            "--raw",
            "--tls-verify=false",
            f"docker://{registry.host}/interop/ref@{referrer.digest}",
        )
    )
    assert manifest["subject"]["digest"] == result.descriptor.digest
