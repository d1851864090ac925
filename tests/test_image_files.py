"""An image's files are unpacked once per machine, whichever stage asks first.

The checks (GGUF facts, memory), the smoke server and publishing to other formats all read an
image's files as files; before one place did it, a ``source: {image: ...}`` model with smoke
checks had its GGUF extracted twice (and publishing extracted it a third time).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.builder import BuildOptions, build
from harness.gguf import read_header
from harness.oci import (
    LayerEntry,
    LayoutWriter,
    OCIError,
    gguf_entry,
    image_config,
    read_layout,
    seed_config,
    unpack,
    unpack_root,
)
from harness.pipeline import artifact_of_layout
from harness.publish import extract_files
from harness.smoke import ServerCommand
from tests.services import Registry
from tests.test_plugin import write_gguf


def _layout(tmp_path: Path, cmd: list[str]) -> Path:
    gguf = write_gguf(tmp_path / "m.gguf")
    layout = tmp_path / "layout"
    with LayoutWriter(layout) as writer:
        layer = writer.add_layer(
            [
                LayerEntry("/app/m.gguf", gguf.read_bytes()),
                LayerEntry("/app/README.md", b"# a model\n"),
            ]
        )
        entry = gguf_entry(read_header(gguf), "/app/m.gguf", 1)
        config = image_config(seed_config(entry, cmd=cmd), [layer.diff_id], [], None)
        writer.tag(writer.add_image(config, [layer]), "latest")
    return layout


def _gguf_copies(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*.gguf") if p.is_file()]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("GGUF_HARNESS_CACHE", str(root))
    return root


def test_checks_smoke_and_publish_share_one_unpacked_copy(tmp_path: Path, cache: Path) -> None:
    layout = _layout(tmp_path, ["-m", "/app/m.gguf", "-c", "64"])
    artifact = artifact_of_layout(layout, "latest")
    command = ServerCommand.from_layout(layout, "latest")
    files = extract_files(read_layout(layout, "latest"))
    (model,) = files.by_role("model")
    assert command.host_path("/app/m.gguf").samefile(artifact.model)
    assert model.host.samefile(artifact.model)
    assert len(_gguf_copies(cache)) == 1, _gguf_copies(cache)
    assert [f.path for f in files.files] == ["app/m.gguf", "app/README.md"]
    # a second session finds everything in place and writes nothing
    before = artifact.model.stat().st_mtime_ns
    again = artifact_of_layout(layout, "latest")
    assert again.model == artifact.model and again.model.stat().st_mtime_ns == before


def test_a_build_is_linked_from_the_builder_store_not_copied(tmp_path: Path, cache: Path) -> None:
    (tmp_path / "src").mkdir()
    gguf = write_gguf(tmp_path / "src" / "m.gguf")
    (tmp_path / "src" / "GGUFPackerfile").write_text(
        'FROM scratch\nCOPY m.gguf /app/\nCMD ["-m", "/app/m.gguf"]\n'
    )
    built = build(BuildOptions(gguf.parent, tmp_path / "out"))
    command = ServerCommand.from_build(built)
    unpacked = command.host_path("/app/m.gguf")
    assert unpacked.samefile(built.files["/app/m.gguf"])
    assert unpacked.stat().st_nlink >= 2


def test_the_root_is_one_directory_per_manifest(tmp_path: Path, cache: Path) -> None:
    layout = _layout(tmp_path, ["-m", "/app/m.gguf"])
    image = read_layout(layout, "latest")
    root = unpack(image, ["app/m.gguf", "/app/m.gguf"])
    assert root == unpack_root(image.descriptor.digest) == unpack(image)
    assert root.parent == cache / "images"
    assert sorted(p.name for p in root.rglob("*")) == ["README.md", "app", "m.gguf"]
    with pytest.raises(OCIError, match="names no file"):
        unpack(image, ["/app/.."])
    with pytest.raises(OCIError, match="not in the image"):
        unpack(image, ["/app/other.gguf"])
    assert not list(root.parent.glob(".*.tmp"))


# --- one image, every source -------------------------------------------------------------------


@pytest.mark.component("registry")
def test_the_same_image_through_every_source_gives_the_same_files_and_digests(
    tmp_path: Path, cache: Path, registry: Registry
) -> None:
    """An OCI layout, the registry it was pushed to, and the store filled from each: one image,
    the same manifest, config and layer digests, the same bytes, and the same model file."""
    import hashlib
    import io

    from harness.distribution import (
        LayoutImageSource,
        Reference,
        RegistryClient,
        RegistryImageSource,
        RegistryOptions,
        push_layout,
    )
    from harness.pipeline import artifact_of_stored
    from harness.store import Store

    layout = _layout(tmp_path, ["-m", "/app/m.gguf"])
    ref = Reference.parse(f"{registry.host}/sources/tiny:v1")
    options = RegistryOptions(insecure=True)
    push_layout(layout, ref, options=options)
    from_layout = LayoutImageSource(layout, "latest")
    with RegistryClient(ref.registry, options) as client:
        from_registry = RegistryImageSource(client, ref)
        images = [from_layout.image(), from_registry.image()]
        assert images[0] == images[1]
        for descriptor in (images[0].config, *images[0].layers):
            fetched = []
            for source in (from_layout, from_registry):
                out = io.BytesIO()
                source.fetch(descriptor, out)
                fetched.append(out.getvalue())
            assert fetched[0] == fetched[1]
            assert "sha256:" + hashlib.sha256(fetched[0]).hexdigest() == descriptor.digest
        stores = [Store(tmp_path / "a"), Store(tmp_path / "b")]
        models = [
            stores[0].add(from_layout, f"{registry.host}/sources/tiny:v1"),
            stores[1].add(from_registry, f"{registry.host}/sources/tiny:v1"),
        ]
    assert models[0].manifest_digest == models[1].manifest_digest == images[0].manifest.digest
    artifacts = [artifact_of_stored(model) for model in models]
    assert artifacts[0].model.read_bytes() == artifacts[1].model.read_bytes()
    assert (
        artifacts[0].model.read_bytes() == artifact_of_layout(layout, "latest").model.read_bytes()
    )
    assert artifacts[0].subject.facts.file_type == artifacts[1].subject.facts.file_type


@pytest.mark.component("registry")
def test_a_model_yaml_source_image_from_a_registry_is_pulled_once_and_checked(
    tmp_path: Path, cache: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.distribution import RegistryOptions, push_layout
    from harness.expect import evaluate, load_spec
    from harness.pipeline import check_memory, produce_artifact
    from harness.store import Store

    monkeypatch.setenv("GGUF_HARNESS_STORE", str(tmp_path / "store"))
    layout = _layout(tmp_path, ["-m", "/app/m.gguf", "-c", "64"])
    ref = f"{registry.host}/sources/yaml:v1"
    push_layout(layout, ref, options=RegistryOptions(insecure=True))
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "model.yaml").write_text(
        f"schemaVersion: 1\nsource:\n  image: {ref}\n"
        "expect:\n  architecture: llama\n"
        "memory:\n  budgets:\n    - name: small\n      ram: 1GiB\n"
    )
    spec = load_spec(directory / "model.yaml")
    artifact = produce_artifact(spec, tmp_path / "out")
    assert artifact.stored is not None and artifact.stored.reference == ref
    assert artifact.model.is_relative_to(tmp_path / "store")  # in place in the store
    (check,) = spec.checks
    assert evaluate(check, artifact.subject).passed
    assert spec.memory is not None and check_memory(artifact, spec.memory, 0).passed
    again = produce_artifact(spec, tmp_path / "out")  # found in the store: same file
    assert again.model == artifact.model
    assert [row.reference for row in Store().rows()] == [ref]
