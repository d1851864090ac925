"""A model of real weight, built: its bytes read in one pass per purpose, and on disk once.

A 200 MB GGUF of random bytes (hashing and the layer are real work) is COPY'd into an image.
Every file the build opens is watched through ``open``: the bytes read from the model and from
the layer blob are counted, and ``du`` over the input, the cache and out/ (hard links counted
once) says what the build added to the disk.
"""

from __future__ import annotations

import builtins
import io
import os
import re
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.builder import BuildOptions, build
from harness.builder import _store as store_module
from harness.builder._store import ContentStore

SIZE = 200 << 20
PACKERFILE = 'FROM scratch\nCOPY model.gguf /models/\nCMD ["-m", "/models/model.gguf"]\n'


def _write_model(path: Path, size: int) -> None:
    """A GGUF with one I8 tensor of ``size`` random bytes."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_tensor_info("w", (size,), np.dtype(np.int8), size, gguf.GGMLQuantizationType.I8)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    rng = np.random.default_rng(0)
    with open(path, "ab") as out:
        out.write(bytes(-out.tell() % 32))
        for start in range(0, size, 32 << 20):
            out.write(rng.bytes(min(32 << 20, size - start)))


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("once") / "context"
    directory.mkdir()
    (directory / "GGUFPackerfile").write_text(PACKERFILE)
    _write_model(directory / "model.gguf", SIZE)
    yield directory
    (directory / "model.gguf").unlink()


class _Counted:
    """A file object that adds the bytes read through it to ``reads[inode]``."""

    def __init__(self, file: Any, inode: int, reads: Counter[int]) -> None:
        self._file, self._inode, self._reads = file, inode, reads

    def read(self, *args: Any) -> Any:
        data = self._file.read(*args)
        self._reads[self._inode] += len(data)
        return data

    def readinto(self, buffer: Any) -> Any:
        got = self._file.readinto(buffer)
        self._reads[self._inode] += got or 0
        return got

    def __enter__(self) -> _Counted:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def __iter__(self) -> Iterator[Any]:
        raise AssertionError("line iteration over a model file")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Counter[int]:
    """Bytes read, by inode, from every file of 100 MB or more that anything opens to read."""
    counts: Counter[int] = Counter()
    real = builtins.open

    def watched(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        opened = real(file, mode, *args, **kwargs)
        if "r" in mode and "b" in mode and not isinstance(file, int):
            st = os.fstat(opened.fileno())
            if st.st_size >= 100 << 20:
                return _Counted(opened, st.st_ino, counts)
        return opened

    monkeypatch.setattr(builtins, "open", watched)
    monkeypatch.setattr(io, "open", watched)
    return counts


def _build(context: Path, work: Path, monkeypatch: pytest.MonkeyPatch, **options: Any) -> Path:
    monkeypatch.setenv("GGUF_HARNESS_CACHE", str(work / "cache"))
    out = work / "out"
    build(BuildOptions(context=context, output=out, **options))
    return out


def _layer_blob(out: Path) -> Path:
    return max((out / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)


def _du(*paths: Path) -> int:
    done = subprocess.run(
        ["du", "-s", "-B1", "-c", *map(str, paths)], capture_output=True, text=True, check=True
    )
    return int(done.stdout.splitlines()[-1].split()[0])


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_a_model_is_read_once(
    context: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    reads: Counter[int],
    compression: str,
) -> None:
    model = context / "model.gguf"
    out = _build(context, tmp_path, monkeypatch, compression=compression)
    size = model.stat().st_size
    # One pass streams the input into its layer, hashing the file, the tar and the blob as
    # they go (it once was three: hash the input, write the layer, hash the layer again).
    assert reads[model.stat().st_ino] <= size + (1 << 20), reads
    assert reads[_layer_blob(out).stat().st_ino] == 0, reads
    # A rebuild knows the input by its stamp and the layer by its record: nothing is read.
    reads.clear()
    _build(context, tmp_path, monkeypatch, compression=compression)
    assert sum(reads.values()) < 1 << 20, reads


def test_the_layer_is_the_only_copy_a_build_adds(
    context: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = context / "model.gguf"
    before = _du(context)
    out = _build(context, tmp_path, monkeypatch, compression="none")
    blob = _layer_blob(out)
    # out/'s layer is the cache's layer: one inode; the input went in as a hard link.
    assert blob.stat().st_nlink == 2
    cached = tmp_path / "cache" / "build" / "blobs" / "sha256" / blob.name
    assert cached.stat().st_ino == blob.stat().st_ino
    stored = ContentStore(tmp_path / "cache" / "build")
    assert stored.path(stored.digest_of(model)).stat().st_ino == model.stat().st_ino
    added = _du(context, tmp_path / "cache", out) - before
    assert added <= 1.05 * model.stat().st_size, (added, model.stat().st_size)


def test_an_input_the_store_cannot_link_is_not_copied(
    context: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A context on another filesystem than the cache: the store refers to the file in place."""
    real_link: Callable[..., None] = os.link
    model = context / "model.gguf"

    def no_link(source: Any, target: Any, *args: Any, **kwargs: Any) -> None:
        if Path(source).resolve() == model.resolve():
            raise OSError(18, "Invalid cross-device link")
        real_link(source, target, *args, **kwargs)

    monkeypatch.setattr(store_module.os, "link", no_link)
    before = _du(context)
    out = _build(context, tmp_path, monkeypatch, compression="none")
    added = _du(context, tmp_path / "cache", out) - before
    assert added <= 1.05 * model.stat().st_size, (added, model.stat().st_size)
    # The build's readable copy of the model is the input itself, found through its stamp...
    store = ContentStore(tmp_path / "cache" / "build")
    digest = store.digest_of(model)
    assert not (tmp_path / "cache/build/blobs/sha256" / digest.removeprefix("sha256:")).exists()
    assert store.path(digest) == model.resolve()
    # ...for as long as the file is unchanged: a new mtime, and the store no longer vouches.
    os.utime(model, ns=(1, 1))
    assert not ContentStore(tmp_path / "cache" / "build").has(digest)


def test_a_stage_outside_the_image_writes_no_layer(
    context: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the image's stages write layers as they hash: a stage that an image only copies
    from has its files hashed, not tarred (a 4 GB F16 stage would cost 4 GB more)."""
    work = tmp_path / "context"
    work.mkdir()
    os.link(context / "model.gguf", work / "model.gguf")
    (work / "GGUFPackerfile").write_text(
        "FROM scratch AS weights\nCOPY model.gguf /\n"
        "FROM scratch\nCOPY --from=weights /model.gguf /models/\n"
        'CMD ["-m", "/models/model.gguf"]\n'
    )
    _build(work, tmp_path, monkeypatch)
    assert len(list((tmp_path / "cache" / "build" / "layers").iterdir())) == 1


def test_a_file_changed_while_it_is_read_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.builder import BuildError

    work = tmp_path / "context"
    work.mkdir()
    (work / "GGUFPackerfile").write_text(PACKERFILE)
    _write_model(work / "model.gguf", 1 << 20)
    real = store_module.stamp_of

    def moved(path: Path) -> list[object]:  # as the store sees it after the read: a new mtime
        stamp = real(path)
        return [*stamp[:3], 1] if path.name == "model.gguf" else stamp

    monkeypatch.setattr(store_module, "stamp_of", moved)  # the source named it before
    with pytest.raises(BuildError, match="changed while the build read it"):
        _build(work, tmp_path, monkeypatch)


def test_a_big_layer_shows_progress_lines_in_ci_logs(
    context: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from harness import _progress

    monkeypatch.setenv("CI", "true")
    _progress.configure(quiet=False, interval=0.0, min_total=32 << 20)  # a line per piece
    try:
        _build(context, tmp_path, monkeypatch)
    finally:
        _progress.configure(quiet=False, interval=5.0, min_total=32 << 20)
    err = capfd.readouterr().err
    going = re.findall(
        r"^gguf-harness: layer model\.gguf: [\d.]+ [KMG]?i?B of 200\.\d\d MiB \(\d+%\), "
        r"[\d.]+ [KMG]?i?B/s, ETA \d+ s$",
        err,
        re.M,
    )
    done = re.findall(r"^gguf-harness: layer model\.gguf: 200\.\d\d MiB in [\d.]+ s, ", err, re.M)
    assert len(going) >= 2 and len(done) == 1, err[-2000:]
