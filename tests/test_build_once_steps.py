"""The one-pass rule (tests/test_build_once.py) for every way a model enters an image.

ADD of a local model and COPY --from a stage outside the image each build a 200 MB GGUF of
random bytes, QUANTIZE in the image's stage a 129 MiB one, with every read of a file of 100 MB
or more counted by inode (test_build_once's ``reads``, which sees tarfile's reads here too).
Each layer is compared with COPY's of the same file: the one pass changes no byte of it.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.builder import BuildOptions, build
from harness.oci import Image, read_layout
from tests.test_build_once import SIZE, _write_model
from tests.test_build_once import reads as reads  # the fixture, by name

CMD = 'CMD ["-m", "/models/model.gguf"]\n'
SLACK = 1 << 20  # headers: GGUF facts, tarfile telling an archive from a plain file


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("once-steps") / "model.gguf"
    _write_model(path, SIZE)
    yield path
    path.unlink()


@pytest.fixture
def counted(reads: Counter[int], monkeypatch: pytest.MonkeyPatch) -> Counter[int]:
    """``reads``, plus what tarfile opens (it keeps its own name for ``open``)."""
    import builtins

    monkeypatch.setattr(tarfile, "bltn_open", builtins.open)
    return reads


def _context(tmp_path: Path, model: Path, packerfile: str) -> Path:
    context = tmp_path / "context"
    context.mkdir(exist_ok=True)
    if not (context / "model.gguf").exists():
        os.link(model, context / "model.gguf")  # the same inode: its reads are counted
    (context / "GGUFPackerfile").write_text(packerfile)
    return context


def _build(context: Path, out: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> Image:
    monkeypatch.setenv("GGUF_HARNESS_CACHE", str(cache))
    build(BuildOptions(context=context, output=out))
    return read_layout(out)


def test_add_of_a_model_reads_it_once(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, counted: Counter[int]
) -> None:
    """A plain file that ADD names is told from an archive by its first bytes and then hashed
    by the pass that writes its layer (it was read twice: hashed, then written)."""
    context = _context(tmp_path, model, f"FROM scratch\nADD --chmod=600 model.gguf /models/\n{CMD}")
    added = _build(context, tmp_path / "add", tmp_path / "cache", monkeypatch)
    assert counted[model.stat().st_ino] <= SIZE + SLACK, counted
    assert sum(counted.values()) <= SIZE + SLACK, counted
    # The layer is COPY's, byte for byte: the same file, mode and owner (built apart).
    (context / "GGUFPackerfile").write_text(
        f"FROM scratch\nCOPY --chmod=600 model.gguf /models/\n{CMD}"
    )
    copied = _build(context, tmp_path / "copy", tmp_path / "cache-copy", monkeypatch)
    assert added.layers == copied.layers and added.diff_ids == copied.diff_ids
    # A rebuild reads nothing.
    counted.clear()
    _build(context, tmp_path / "again", tmp_path / "cache", monkeypatch)
    assert sum(counted.values()) < SLACK, counted


def test_add_of_an_archive_still_unpacks_it(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first bytes say "archive": ADD unpacks it, in the image stage as in any other."""
    context = _context(tmp_path, model, f"FROM scratch\nADD weights.tar /models/\n{CMD}")
    with tarfile.open(context / "weights.tar", "w") as archive:
        archive.add(model, "model.gguf")
    image = _build(context, tmp_path / "out", tmp_path / "cache", monkeypatch)
    (context / "GGUFPackerfile").write_text(f"FROM scratch\nCOPY model.gguf /models/\n{CMD}")
    copied = _build(context, tmp_path / "copy", tmp_path / "cache-copy", monkeypatch)
    assert image.diff_ids == copied.diff_ids
    # And in a stage outside the image, that the image copies from.
    (context / "GGUFPackerfile").write_text(
        "FROM scratch AS weights\nADD weights.tar /w/\n"
        f"FROM scratch\nCOPY --from=weights /w/ /models/\n{CMD}"
    )
    staged = _build(context, tmp_path / "staged", tmp_path / "cache-staged", monkeypatch)
    assert staged.diff_ids == copied.diff_ids


def test_copy_from_a_stage_outside_the_image_reads_the_model_once(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, counted: Counter[int]
) -> None:
    """A stage outside the image holds a stand-in for a file it has not hashed: the image's
    COPY --from hashes it as it writes the layer (it was read twice: hashed by the stage, then
    written), and the stage leaves no layer of its own."""
    packerfile = (
        "FROM scratch AS weights\nCOPY model.gguf /\n"
        f"FROM scratch\nCOPY --from=weights --chmod=600 /model.gguf /models/\n{CMD}"
    )
    context = _context(tmp_path, model, packerfile)
    image = _build(context, tmp_path / "out", tmp_path / "cache", monkeypatch)
    assert counted[model.stat().st_ino] <= SIZE + SLACK, counted
    assert sum(counted.values()) <= SIZE + SLACK, counted
    assert len(list((tmp_path / "cache" / "build" / "layers").iterdir())) == 1
    (context / "GGUFPackerfile").write_text(
        f"FROM scratch\nCOPY --chmod=600 model.gguf /models/\n{CMD}"
    )
    copied = _build(context, tmp_path / "copy", tmp_path / "cache-copy", monkeypatch)
    assert image.diff_ids == copied.diff_ids
    # A rebuild knows the file by its stamp and the layer by its record: nothing is read.
    counted.clear()
    (context / "GGUFPackerfile").write_text(packerfile)
    again = _build(context, tmp_path / "again", tmp_path / "cache", monkeypatch)
    assert again.descriptor == image.descriptor
    assert sum(counted.values()) < SLACK, counted


@pytest.fixture(scope="module")
def f16(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A 243 MiB F16 llama that llama.cpp quantizes in about a second (129 MiB at Q8_0)."""
    import gguf

    from tests.gguf_files import write_model

    pytest.importorskip("llama_cpp")
    path = tmp_path_factory.mktemp("once-f16") / "f16.gguf"
    write_model(
        path,
        weight_type=gguf.GGMLQuantizationType.F16,
        file_type=gguf.LlamaFileType.MOSTLY_F16,
        n_embd=4608,
    )
    yield path
    path.unlink()


@pytest.mark.component("llama.cpp")
def test_a_quantized_model_is_read_once_into_its_layer(
    f16: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, counted: Counter[int]
) -> None:
    """QUANTIZE in the image's stage: its output is hashed by the pass that writes its layer
    (it was read twice: hashed into the store, then written)."""
    packerfile = (
        "FROM scratch AS f16\nCOPY f16.gguf /\n"
        f"FROM scratch\nQUANTIZE --from=f16 --type=Q8_0 /f16.gguf /models/model.gguf\n{CMD}"
    )
    context = tmp_path / "context"
    context.mkdir()
    os.link(f16, context / "f16.gguf")
    (context / "GGUFPackerfile").write_text(packerfile)
    monkeypatch.setenv("GGUF_HARNESS_CACHE", str(tmp_path / "cache"))
    built = build(BuildOptions(context=context, output=tmp_path / "out"))
    quantized = built.files["/models/model.gguf"]
    size = quantized.stat().st_size
    assert counted[quantized.stat().st_ino] <= size + SLACK, counted
    # Its layer is what COPY makes of the same file (so what the two passes made before).
    image = read_layout(tmp_path / "out")
    shutil.copyfile(quantized, context / "model.gguf")
    (context / "GGUFPackerfile").write_text(f"FROM scratch\nCOPY model.gguf /models/\n{CMD}")
    copied = _build(context, tmp_path / "copy", tmp_path / "cache-copy", monkeypatch)
    assert image.diff_ids == copied.diff_ids
    # A rebuild runs nothing and reads nothing but headers.
    counted.clear()
    (context / "GGUFPackerfile").write_text(packerfile)
    again = _build(context, tmp_path / "again", tmp_path / "cache", monkeypatch)
    assert again.diff_ids == image.diff_ids
    assert sum(counted.values()) < SLACK, counted


def test_copy_from_an_image_reads_its_layer_once(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, counted: Counter[int]
) -> None:
    """COPY --from an image: one pass over its layer blob lists the files, checks the digest
    and writes (and hashes) the files out; the store takes each file with that digest, so the
    file is read once more, by the pass that writes the new layer (its tar's digest needs the
    bytes), and never to hash it. Before: the blob twice (listed, then extracted) and the file
    twice (hashed into the store, then the layer), 4x the model."""
    context = _context(tmp_path, model, f"FROM scratch\nCOPY model.gguf /models/\n{CMD}")
    base = _build(context, tmp_path / "base", tmp_path / "cache-base", monkeypatch)
    blob = base.blob_path(base.layers[0].digest)
    (context / "GGUFPackerfile").write_text(
        f"FROM scratch\nCOPY --from=oci-layout://{tmp_path / 'base'} /models/ /models/\n{CMD}"
    )
    counted.clear()
    image = _build(context, tmp_path / "out", tmp_path / "cache", monkeypatch)
    assert counted[blob.stat().st_ino] <= SIZE + SLACK, counted
    others = [n for inode, n in counted.items() if inode != blob.stat().st_ino]
    assert max(others, default=0) <= SIZE + SLACK, counted  # the new layer's pass, no hashing
    assert sum(counted.values()) <= 2 * SIZE + SLACK, counted
    assert image.diff_ids == base.diff_ids
    # A rebuild reads nothing: the files by the image's digest, the layer by its record.
    counted.clear()
    _build(context, tmp_path / "again", tmp_path / "cache", monkeypatch)
    assert sum(counted.values()) < SLACK, counted
