"""Interop: skopeo (containers/image) reads and copies the layouts we write, and we read its.

Skipped where skopeo is not installed; under CI=true the component marker turns that skip into
a failure (tests/conftest.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness.oci import (
    HistoryEntry,
    LayerEntry,
    LayoutWriter,
    extract,
    files,
    image_config,
    read_layout,
    seed_config,
)

pytestmark = pytest.mark.component("skopeo")

# Over 1 MiB: in an uncompressed layer its data starts block-aligned, behind a padding pax header.
MODEL = b"GGUF" + bytes(range(256)) * 4100


def _skopeo(*args: str) -> str:
    binary = shutil.which("skopeo")
    if binary is None:
        pytest.skip("skopeo is not installed (apt-get install skopeo)")
    done = subprocess.run(
        [binary, "--insecure-policy", *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"skopeo {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


def _write(out: Path, compression: str) -> tuple[str, list[Any]]:
    labels = {"gguf.model.usage": "text-to-text", "org.opencontainers.image.title": "tiny"}
    with LayoutWriter(out) as writer:
        weights = writer.add_layer([LayerEntry("/app/model.gguf", MODEL)], compression)
        extra = writer.add_layer(
            [LayerEntry("/app/system-prompt.txt", b"Be brief.\n", mode=0o600)], compression
        )
        config = image_config(
            seed_config(None, cmd=["-m", "/app/model.gguf"], labels=labels),
            [weights.diff_id, extra.diff_id],
            [HistoryEntry("COPY model.gguf /app/ # buildkit"), HistoryEntry("CAT system-prompt")],
            "2024-01-01T00:00:00Z",
        )
        manifest = writer.add_image(config, [weights, extra])
        writer.tag(manifest, "v1")
    return manifest.digest, [weights.descriptor.digest, extra.descriptor.digest]


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_skopeo_inspects_what_we_write(tmp_path: Path, compression: str) -> None:
    if compression == "zstd":
        pytest.importorskip("zstandard")
    out = tmp_path / "layout"
    digest, layers = _write(out, compression)
    inspected = json.loads(_skopeo("inspect", f"oci:{out}:v1"))
    assert inspected["Digest"] == digest
    assert inspected["Layers"] == layers
    assert inspected["Labels"]["org.opencontainers.image.title"] == "tiny"
    assert (inspected["Architecture"], inspected["Os"]) == ("amd64", "linux")
    raw = json.loads(_skopeo("inspect", "--raw", f"oci:{out}:v1"))
    assert raw == read_layout(out, "v1").manifest
    config = json.loads(_skopeo("inspect", "--config", f"oci:{out}:v1"))
    assert config["config"]["Cmd"] == ["-m", "/app/model.gguf"]


def test_skopeo_copies_between_layouts(tmp_path: Path) -> None:
    out = tmp_path / "layout"
    digest, layers = _write(out, "gzip")
    other = tmp_path / "copied"
    _skopeo("copy", f"oci:{out}:v1", f"oci:{other}:v1")
    copied = read_layout(f"{other}:v1")
    # Same layers, same config: the copy is our image, byte for byte.
    assert [layer.digest for layer in copied.layers] == layers
    assert copied.descriptor.digest == digest
    listing = files(copied)
    assert listing["/app/system-prompt.txt"].mode == 0o600
    model = extract(copied, "/app/model.gguf", tmp_path / "model.gguf")
    assert model.read_bytes() == MODEL


def test_skopeo_copies_an_uncompressed_layout(tmp_path: Path) -> None:
    out = tmp_path / "layout"
    digest, layers = _write(out, "none")
    other = tmp_path / "copied"
    # containers/image gzips an uncompressed layer on its way into an oci: directory; with
    # --preserve-digests it keeps it as it is.
    _skopeo("copy", f"oci:{out}:v1", f"oci:{other}:v1")
    _skopeo("copy", "--preserve-digests", f"oci:{out}:v1", f"oci:{tmp_path / 'kept'}:v1")
    kept = read_layout(f"{tmp_path / 'kept'}:v1")
    assert [layer.digest for layer in kept.layers] == layers and kept.descriptor.digest == digest
    for layout in (other, tmp_path / "kept"):
        image = read_layout(f"{layout}:v1")
        # the same tar: the config's diff_ids are checked against each layer as it is read
        assert extract(image, "/app/model.gguf", tmp_path / "model.gguf").read_bytes() == MODEL


def test_we_read_skopeo_docker_schema2_conversion(tmp_path: Path) -> None:
    out = tmp_path / "layout"
    _write(out, "gzip")
    # containers/image writes Docker schema 2 into an OCI layout when asked: the media types
    # the seed's BuildKit images carry.
    converted = tmp_path / "docker"
    _skopeo("copy", "--format", "v2s2", f"oci:{out}:v1", f"oci:{converted}:v1")
    image = read_layout(converted, "v1")
    assert image.descriptor.media_type == "application/vnd.docker.distribution.manifest.v2+json"
    assert image.labels["gguf.model.usage"] == "text-to-text"
    assert extract(image, "/app/system-prompt.txt", tmp_path / "p").read_bytes() == b"Be brief.\n"
