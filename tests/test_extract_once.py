"""Extraction reads each layer once: the listing, the digest check and the files written out
come from one pass (harness/oci/_extract_write.py), and each file's sha256 comes with it.

The 200 MB image is built from test_build_once's GGUF of random bytes, and every read of a file
of 100 MB or more is counted by inode (test_build_once's ``reads``).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from harness.builder import BuildOptions, build
from harness.errors import OCIError
from harness.oci import (
    OCI_LAYER,
    OCI_LAYER_GZIP,
    Image,
    LayoutWriter,
    _extract_write,
    extract_hashed,
    read_layout,
    unpack,
)
from tests.test_build_once import SIZE, _write_model
from tests.test_build_once import reads as reads  # the fixture, by name
from tests.test_oci_layout import TarMember, _raw_image, _tar

SLACK = 1 << 20
REG = tarfile.REGTYPE


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    root = tmp_path_factory.mktemp("extract-once")
    context = root / "context"
    context.mkdir()
    _write_model(context / "model.gguf", SIZE)
    (context / "GGUFPackerfile").write_text(
        'FROM scratch\nCOPY model.gguf /models/\nCMD ["-m", "/models/model.gguf"]\n'
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GGUF_HARNESS_CACHE", str(root / "cache"))
        build(BuildOptions(context=context, output=root / "out"))
    (context / "model.gguf").unlink()
    return read_layout(root / "out")


def _sha(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("paths", [["/models/model.gguf"], None], ids=["one-file", "whole"])
def test_unpack_reads_the_layer_once(
    image: Image, tmp_path: Path, reads: Counter[int], paths: list[str] | None
) -> None:
    # What estimate and smoke ask for: the model file (or the whole tree, for publish).
    blob = image.blob_path(image.layers[0].digest)
    root = unpack(image, paths, base=tmp_path / "images")
    model = root / "models" / "model.gguf"
    assert model.stat().st_size > SIZE
    assert reads[blob.stat().st_ino] <= blob.stat().st_size + SLACK, reads  # was twice
    assert sum(reads.values()) <= blob.stat().st_size + SLACK, reads


def test_extract_hands_back_the_digests_of_what_it_wrote(image: Image, tmp_path: Path) -> None:
    done = extract_hashed(image, "/models/model.gguf", tmp_path / "model.gguf")
    assert done.digests == {"": _sha(tmp_path / "model.gguf")}


def _layout(out: Path, layers: list[list[TarMember]]) -> Image:
    _raw_image(out, [*layers])
    return read_layout(out)


def test_a_tree_comes_with_every_file_digest(tmp_path: Path) -> None:
    image = _layout(
        tmp_path / "layout",
        [
            [("app/a", REG, b"a1"), ("app/gone", REG, b"x"), ("b", REG, b"b")],
            [
                ("app/a", REG, b"a2"),  # replaces the lower layer's, whose staging goes
                ("app/.wh.gone", REG, b""),
                ("app/link", tarfile.LNKTYPE, "b"),  # outside the request: a second pass
            ],
        ],
    )
    done = extract_hashed(image, "/app", tmp_path / "app")
    written = {str(p.relative_to(done.path)): _sha(p) for p in done.path.rglob("*") if p.is_file()}
    assert done.digests == written
    assert sorted(written) == ["a", "link"]
    assert (done.path / "a").read_bytes() == b"a2"
    assert (done.path / "link").read_bytes() == b"b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app", "layout"]  # no staging left


def test_only_a_path_a_later_symlink_redirects_reads_a_layer_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = _layout(
        tmp_path / "layout",
        [
            [("real/model.gguf", REG, b"weights"), ("other", REG, b"o")],
            [("latest", tarfile.SYMTYPE, "real")],
        ],
    )
    opened: list[str] = []
    real_open = open

    def counting(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(os.path.basename(str(file)))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(_extract_write, "open", counting, raising=False)
    blobs = [image.blob_path(layer.digest).name for layer in image.layers]
    assert extract_hashed(image, "/real/model.gguf", tmp_path / "a").path.read_bytes() == b"weights"
    assert opened == blobs  # each layer once
    opened.clear()
    # Through the link the second layer adds: the first layer's member was not kept by the pass.
    assert extract_hashed(image, "/latest/model.gguf", tmp_path / "b").path.read_bytes() == (
        b"weights"
    )
    assert opened == [*blobs, blobs[0]]


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_a_diff_id_the_tar_does_not_hash_to_is_refused(tmp_path: Path, compression: str) -> None:
    # Uncompressed, the blob's one sha256 is both checks: a config naming another diff_id is
    # still caught, before anything is written out.
    tar = _tar([("m.gguf", REG, b"weights")])
    blob = gzip.compress(tar, mtime=0) if compression == "gzip" else tar
    wrong = "sha256:" + hashlib.sha256(tar + b"x").hexdigest()
    with LayoutWriter(tmp_path / "layout") as writer:
        layer = writer.add_blob(blob, OCI_LAYER_GZIP if compression == "gzip" else OCI_LAYER)
        config = {"os": "linux", "rootfs": {"type": "layers", "diff_ids": [wrong]}}
        writer.tag(writer.add_image(config, [layer]), "latest")
    image = read_layout(tmp_path / "layout")
    with pytest.raises(OCIError, match="but the config's diff_id is"):
        extract_hashed(image, "/m.gguf", tmp_path / "m.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layout"]
