"""Before writing, check the room: a pull, a publish to an OCI layout and a build that need more
disk than is free fail at once, with one line giving the figures (needed, free, where), and
leave nothing behind. The free space is faked by replacing ``shutil.disk_usage``, which is all
``harness._fs.ensure_room`` asks."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections import namedtuple
from pathlib import Path
from typing import BinaryIO

import gguf
import pytest

from harness.builder import BuildOptions, build
from harness.cli import main
from harness.distribution import (
    Artifact,
    Prefix,
    RegistryClient,
    RegistryOptions,
    pull_layout,
    push_layout,
)
from harness.errors import HarnessError
from harness.oci import OCI_CONFIG, Descriptor, LayerEntry, LayoutWriter, read_layout
from harness.publish import Evidence, PublishSpec, publish
from harness.publish._layout_target import write_layout_target
from harness.store import Store
from harness.toolchain import convert
from harness.toolchain._room import convert_floor, model_headers, quantize_floor
from tests.gguf_files import write_model
from tests.services import Registry

T = gguf.GGMLQuantizationType

Usage = namedtuple("Usage", "total used free")
PASSED = Evidence(True, checks=1, llama_cpp="0c1e570", smoke="passed")
PACKERFILE = 'FROM scratch\nCOPY model.gguf /models/\nCMD ["-m", "/models/model.gguf"]\n'
LAYER = 3 << 20
DECLARED = 4 << 20  # the config's Size: more than the compressed layer, as a GGUF's can be
OPTIONS = RegistryOptions(insecure=True)


def fake_free(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(1 << 40, (1 << 40) - free, free))


def image_layout(path: Path, name: str = "model.gguf") -> Path:
    """An image with one gzip layer of LAYER random bytes and a config declaring DECLARED."""
    with LayoutWriter(path) as writer:
        layer = writer.add_layer([LayerEntry(f"/m/{name}", os.urandom(LAYER))], "gzip")
        config = {
            "architecture": "amd64",
            "config": {"Cmd": ["-m", f"/m/{name}"], "Size": DECLARED},
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        }
        writer.tag(writer.add_image(config, [layer]), "v1")
    return path


def sizes(layout: Path) -> tuple[int, int, int]:
    """(manifest, config, layer) sizes of the image in ``layout``."""
    image = read_layout(layout)
    return image.descriptor.size, image.config_descriptor.size, image.layers[0].size


def tree(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.component("registry")
@pytest.mark.usefixtures("no_user_credentials")
def test_a_pull_that_cannot_fit_fails_at_once_and_leaves_no_store(
    registry: Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    layout = image_layout(tmp_path / "layout")
    ref = f"{registry.host}/disk/pull:v1"
    push_layout(layout, ref, options=OPTIONS)
    manifest, config, layer = sizes(layout)
    store = tmp_path / "store"
    monkeypatch.setenv("GGUF_HARNESS_STORE", str(store))
    fetched: list[str] = []
    original = RegistryClient.fetch_blob

    def recording(
        self: RegistryClient,
        repository: str,
        descriptor: Descriptor,
        out: BinaryIO,
        prefix: Prefix | None = None,
    ) -> None:
        fetched.append(descriptor.digest)
        original(self, repository, descriptor, out, prefix)

    monkeypatch.setattr(RegistryClient, "fetch_blob", recording)
    # A pull unpacks the layer as it downloads (no download file beside it): at its peak it
    # holds the unpacked files (at least the GGUF bytes the config declares), the manifest and
    # the config.
    needed = manifest + config + max(layer, DECLARED)
    fake_free(monkeypatch, needed - 1)
    assert main(["pull", ref, "--insecure"]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"gguf-harness: error: not enough disk for the pull of {ref}: {needed} bytes needed, "
        f"{needed - 1} free in {tmp_path}\n"
    )
    assert not store.exists()  # not even the store's skeleton
    assert fetched == [read_layout(layout).config_descriptor.digest]  # not a byte of the layer

    # The figure is the threshold, not a guess: with exactly that much free, the pull runs.
    fake_free(monkeypatch, needed)
    assert main(["pull", ref, "--insecure"]) == 0
    assert Store(store).get(ref).path("/m/model.gguf").stat().st_size == LAYER
    # Pulling it again needs nothing: every part is in the store already.
    fake_free(monkeypatch, 0)
    assert main(["pull", ref, "--insecure"]) == 0


def test_an_import_that_cannot_fit_leaves_the_store_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path / "store")
    store.add_layout(image_layout(tmp_path / "first"), "127.0.0.1:1/first:v1")
    second = image_layout(tmp_path / "second", "other.gguf")
    manifest, config, layer = sizes(second)
    before = tree(store.root)
    fake_free(monkeypatch, 1 << 20)
    with pytest.raises(HarnessError) as refused:
        store.add_layout(second, "127.0.0.1:1/second:v1")
    # A local layer is unpacked from where it lies: no download to count.
    needed = manifest + config + max(layer, DECLARED)
    assert str(refused.value) == (
        f"not enough disk for the pull of 127.0.0.1:1/second:v1: {needed} bytes needed, "
        f"{1 << 20} free in {store.root}"
    )
    assert tree(store.root) == before
    assert [row.reference for row in store.rows()] == ["127.0.0.1:1/first:v1"]


@pytest.mark.component("registry")
@pytest.mark.usefixtures("no_user_credentials")
def test_a_layout_pull_that_cannot_fit_writes_nothing(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = image_layout(tmp_path / "layout")
    ref = f"{registry.host}/disk/layout:v1"
    push_layout(layout, ref, options=OPTIONS)
    manifest, config, layer = sizes(layout)
    dest = tmp_path / "pulled" / "image"
    fake_free(monkeypatch, 4096)
    needed = manifest + config + layer
    with pytest.raises(HarnessError, match=rf": {needed} bytes needed, 4096 free in {tmp_path}$"):
        pull_layout(ref, dest, options=OPTIONS)
    assert not dest.parent.exists()


@pytest.fixture
def built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GGUF_HARNESS_CACHE", str(tmp_path / "cache"))
    context = tmp_path / "context"
    context.mkdir()
    write_model(context / "model.gguf")
    (context / "GGUFPackerfile").write_text(PACKERFILE)
    return build(BuildOptions(context=context, output=tmp_path / "out" / "tiny", tag="v1")).output


def test_a_publish_to_a_layout_that_cannot_fit_fails_before_extracting(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_extraction(*_args: object) -> None:
        raise AssertionError("extracted the model's files although the disk was known too small")

    monkeypatch.setattr("harness.publish._publish.extract_files", no_extraction)
    target = tmp_path / "out" / "published" / "tiny"
    spec = PublishSpec((f"oci:{target}",), formats=("gguf-packer", "modelpack"))
    image = read_layout(built)
    files = max(sum(d.size for d in image.layers), image.config["config"]["Size"])
    fake_free(monkeypatch, 1024)
    with pytest.raises(HarnessError) as refused:
        publish(built, spec, PASSED)
    # The files unpacked into the harness cache, and the layout's own small blobs: its big ones
    # are hard links (one file system).
    needed = files + (1 << 20)
    cache = Path(os.environ["GGUF_HARNESS_CACHE"])
    assert str(refused.value) == (
        f"not enough disk for publishing {built} to oci:{target}: {needed} bytes needed, "
        f"1024 free in {cache}"
    )
    assert sorted(p.name for p in built.parent.iterdir()) == ["tiny"]  # no work dir, no target


def test_a_layout_target_refuses_what_it_cannot_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = b'{"architecture":"amd64","os":"linux"}'
    blob = os.urandom(2 << 20)
    artifact = Artifact.manifest(
        (Descriptor(OCI_CONFIG, _digest(config), len(config)), config),
        [(Descriptor("application/octet-stream", _digest(blob), len(blob)), blob)],
    )
    target = tmp_path / "published"
    fake_free(monkeypatch, 1 << 20)
    with pytest.raises(HarnessError, match=rf"^not enough disk for oci:{target}: \d+ bytes"):
        write_layout_target(
            target, {"gguf-packer": artifact}, PublishSpec(()), PASSED, "application/json"
        )
    assert list(tmp_path.iterdir()) == []


def test_test_publish_reports_the_figures_and_writes_nothing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GGUF_HARNESS_CACHE", str(pytester.path / "cache"))
    write_model(pytester.path / "model.gguf")
    (pytester.path / "GGUFPackerfile").write_text(PACKERFILE)
    (pytester.path / "model.yaml").write_text(
        "schemaVersion: 1\nname: tiny\nexpect:\n  architecture: llama\n"
        "publish:\n  formats: [gguf-packer, modelpack]\n"
    )
    pytester.runpytest().assert_outcomes(passed=1)  # built, tested, not published
    out = pytester.path / "out"
    fake_free(monkeypatch, 1024)
    result = pytester.runpytest("--publish")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "tiny: publishing failed: not enough disk for publishing out/tiny to "
            f"oci:out/published/tiny: * bytes needed, 1024 free in {pytester.path}/cache*"
        ]
    )
    assert sorted(p.name for p in out.iterdir()) == ["tiny"]


def test_a_build_that_cannot_fit_fails_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GGUF_HARNESS_CACHE", str(tmp_path / "cache"))
    context = tmp_path / "context"
    context.mkdir()
    write_model(context / "model.gguf")
    (context / "GGUFPackerfile").write_text(PACKERFILE)
    out = tmp_path / "out" / "tiny"
    fake_free(monkeypatch, 1024)
    assert main(["build", str(context), "--output", str(out)]) == 1
    assert "bytes needed, 1024 free in" in capsys.readouterr().err
    assert not out.exists()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_run_and_estimate_of_a_layout_that_cannot_be_unpacked_fail_at_once(
    built: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The image's files for estimate, run and smoke are unpacked into the cache: a disk too
    small for them is refused with the figures before a byte is written."""
    image = read_layout(built)
    needed = max(sum(d.size for d in image.layers), image.config["config"]["Size"])
    fake_free(monkeypatch, 1024)
    for command in (["estimate", str(built)], ["run", str(built), "--dry-run"]):
        assert main(command) == 1
        error = capsys.readouterr().err
        assert f"not enough disk for unpacking {built}: {needed} bytes needed" in error
        assert len(error.strip().splitlines()) == 1
    images = Path(os.environ["GGUF_HARNESS_CACHE"]) / "images"
    assert not images.exists() or [p.name for p in images.iterdir()] == []


def test_a_quantize_that_cannot_fit_is_refused_before_the_quantizer_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """llama-quantize would find a full disk only at its failed write; the output's floor
    (harness.toolchain._room) is checked first, and the tool never starts."""
    monkeypatch.setenv("GGUF_HARNESS_CACHE", str(tmp_path / "cache"))
    ran = tmp_path / "quantizer-ran"
    fake = tmp_path / "llama-quantize"
    fake.write_text(f"#!/bin/sh\ntouch {ran}\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("GGUF_HARNESS_LLAMA_QUANTIZE", str(fake))
    context = tmp_path / "context"
    context.mkdir()
    write_model(context / "model.gguf", weight_type=T.F16, file_type=gguf.LlamaFileType.MOSTLY_F16)
    (context / "GGUFPackerfile").write_text(
        "FROM scratch AS f16\nCOPY model.gguf /\n"
        "FROM scratch\nQUANTIZE --from=f16 --type=Q4_K_M /model.gguf /models/m.gguf\n"
        'CMD ["-m", "/models/m.gguf"]\n'
    )
    floor = quantize_floor(model_headers(context / "model.gguf"), "Q4_K_M")
    assert floor > 0
    fake_free(monkeypatch, floor // 2)
    out = tmp_path / "out" / "tiny"
    assert main(["build", str(context), "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"not enough disk for QUANTIZE Q4_K_M: {floor} bytes needed, {floor // 2} free" in err
    assert "GGUFPackerfile:4" in err
    assert not ran.exists() and not out.exists()


def test_a_convert_that_cannot_fit_is_refused_before_the_converter_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.models import write_tiny_llama

    model = write_tiny_llama(tmp_path / "tiny-llama")
    floor = convert_floor(model, "f16")
    # Two bytes an element, less the floor's margin, of the safetensors' elements.
    assert 0 < floor < sum(p.stat().st_size for p in model.glob("*.safetensors"))
    fake_free(monkeypatch, floor - 1)
    with pytest.raises(HarnessError, match=f"CONVERT --outtype f16: {floor} bytes needed"):
        convert(model, tmp_path / "out" / "tiny.gguf", out_type="F16")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
