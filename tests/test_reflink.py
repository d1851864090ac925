"""Stored once on a reflink filesystem: an uncompressed layer puts a big file's data at a
4096-byte-aligned offset, so that on XFS (reflink=1) or btrfs the layer shares the file's blocks.

The layout's facts (aligned offsets, every reader gets the same bytes) hold everywhere; the disk
facts are measured on a real XFS the ``reflink_fs`` fixture loop-mounts (tests/services.py),
by the filesystem's free space before and after (statvfs), nothing else.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness._fs import remove_tree
from harness.builder import BuildOptions, _layers, build
from harness.builder._store import ContentStore
from harness.builder._tree import Node
from harness.errors import OCIError, StoreError
from harness.oci import (
    Descriptor,
    Image,
    LayerEntry,
    LayoutWriter,
    _extract_write,
    _layer_sink,
    extract,
    read_layout,
    unpack,
    write_layer,
)
from harness.oci._tarread import iter_layer
from harness.store import Store, _tarwrite
from harness.store._unpack import UnpackLimits, unpack_layer
from tests.estimate_models import TinySpec, write_llama

ALIGN = 4096
BIG = (1 << 20) + 123  # over the 1 MiB from which members are aligned, with a partial block

xfs = pytest.mark.component("xfs")


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _free(where: Path) -> int:
    """Free bytes of the filesystem, once everything written so far has reached it."""
    os.sync()
    stats = os.statvfs(where)
    return stats.f_bfree * stats.f_frsize


def _write(path: Path, entries: list[LayerEntry], compression: str = "none") -> str:
    with path.open("w+b") as out:
        return write_layer(entries, out, compression, mtime=0).digest


# --- the layout: every filesystem ------------------------------------------------------------


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "model.gguf"
    path.write_bytes(os.urandom(BIG))
    return path


@pytest.mark.parametrize("blocks", range(8))
def test_big_members_start_on_a_block_and_read_back_identical(
    tmp_path: Path, big: Path, blocks: int
) -> None:
    # A small file of `blocks` tar blocks before the big one: its header lands at each of the
    # eight offsets a 512-byte block can have in a 4096-byte one (one needs 4608 bytes).
    small = os.urandom(blocks * 512)
    long_name = "models/" + "ä" * 60 + "/model.gguf"  # a pax header of its own, padded too
    entries = [
        LayerEntry("app/a", small),
        LayerEntry("app/b.gguf", big),
        LayerEntry("app/c.txt", b"small, left unaligned\n"),
        LayerEntry(long_name, big),
    ]
    layer = tmp_path / "layer.tar"
    digest = _write(layer, entries)
    data = layer.read_bytes()
    assert digest == "sha256:" + hashlib.sha256(data).hexdigest()
    expected = {"app/a": small, "app/b.gguf": big.read_bytes(), long_name: big.read_bytes()}
    expected["app/c.txt"] = b"small, left unaligned\n"
    with tarfile.open(layer) as tar:
        members = tar.getmembers()
        read = {m.name: tar.extractfile(m).read() for m in members if m.isreg()}  # type: ignore[union-attr]
    assert read == expected
    end = 0  # where the member before ends
    for member in members:
        header = member.offset_data - end  # its header, pax headers and padding included
        if member.size >= 1 << 20:
            assert member.offset_data % ALIGN == 0, member.name
            plain = 512 if member.name == "app/b.gguf" else 1536  # the long name's pax header
            gap = -(end + plain) % ALIGN
            # the least padding: a pax header takes two blocks, so a gap of one takes 4096 more
            assert header - plain == (gap + ALIGN if gap == 512 else gap), member.name
        elif member.isreg():
            assert "comment" not in member.pax_headers  # small files are not padded
        end = member.offset_data + -(-member.size // 512) * 512
    # Our own readers: the streaming one (digest checked) and the store's unpacker.
    descriptor = Descriptor("application/vnd.oci.image.layer.v1.tar", digest, len(data))
    read = {m.name: b"".join(chunks()) for m, chunks in iter_layer(layer, descriptor) if m.isreg()}
    assert read == expected
    unpack_layer(layer, descriptor, digest, tmp_path / "unpacked", UnpackLimits())
    for name, content in expected.items():
        assert (tmp_path / "unpacked" / "fs" / name).read_bytes() == content


def test_the_padding_is_the_same_whatever_writes_it(tmp_path: Path, big: Path) -> None:
    entries = [LayerEntry("a", b"x" * 700), LayerEntry("b.gguf", big)]
    in_memory = io.BytesIO()  # no file: nothing can be cloned, the bytes are the same
    stats = write_layer(entries, in_memory, "none", mtime=0)
    assert _write(tmp_path / "file.tar", entries) == stats.digest
    assert (tmp_path / "file.tar").read_bytes() == in_memory.getvalue()


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compressed_layers_carry_the_same_tar(tmp_path: Path, big: Path, compression: str) -> None:
    # One tar in every layer format: the diff_id, and so the image config, does not depend on
    # the compression; the padding compresses to almost nothing.
    entries = [LayerEntry("a", b"x" * 700), LayerEntry("b.gguf", big)]
    plain = tmp_path / "plain.tar"
    _write(plain, entries)
    layer = tmp_path / "layer"
    with layer.open("wb") as out:
        stats = write_layer(entries, out, compression, mtime=0)
    if compression == "zstd":
        zstandard = pytest.importorskip("zstandard")
        tar_bytes = zstandard.ZstdDecompressor().decompressobj().decompress(layer.read_bytes())
    else:
        tar_bytes = gzip.decompress(layer.read_bytes())
    assert tar_bytes == plain.read_bytes()
    assert stats.diff_id == "sha256:" + hashlib.sha256(tar_bytes).hexdigest()


def test_a_layer_cached_in_the_old_layout_is_not_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The build cache keeps layers by their files; the same files made other (unaligned) bytes
    # before, so the tar's layout is part of the key: an old cache cannot hand out old layers.
    layers = _layers.Layers(ContentStore(tmp_path / "cache"), "none")
    files = {"app/model.gguf": Node("sha256:" + "0" * 64, BIG)}
    today = layers._record(files)
    monkeypatch.setattr(_layers, "TAR_LAYOUT", "unaligned")
    assert layers._record(files) != today


# --- on XFS: the layer shares the model's blocks ----------------------------------------------

PACKERFILE = """\
FROM scratch AS f16
COPY f16.gguf .
FROM scratch
QUANTIZE --from=f16 --type=Q8_0 f16.gguf model.gguf
CMD ["-m", "model.gguf"]
"""


@dataclass(frozen=True)
class Built:
    manifest: str
    layers: list[str]
    model: int  # bytes of the quantized GGUF
    used: int  # bytes the build took from its filesystem, beyond the input
    output: Path


@pytest.fixture(scope="module")
def f16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 244 MB of F16 that QUANTIZE makes 130 MB of Q8_0: a model, at a test's cost (~6 s).
    path = tmp_path_factory.mktemp("f16") / "f16.gguf"
    return write_llama(path, TinySpec(1024, 8, 16, 4, 64, 2816, 16000, 4096, matrix_type="F16"))


def _build(root: Path, f16: Path, monkeypatch: pytest.MonkeyPatch) -> Built:
    context = root / "context"
    context.mkdir(parents=True)
    (context / "GGUFPackerfile").write_text(PACKERFILE)
    shutil.copyfile(f16, context / "f16.gguf")  # the input, on the build's filesystem
    monkeypatch.setenv("GGUF_HARNESS_CACHE", str(root / "cache"))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    before = _free(root)
    result = build(BuildOptions(context=context, output=root / "out"))
    used = before - _free(root)
    image = read_layout(result.output, result.tag)
    layers = [layer.digest for layer in image.layers]
    return Built(
        result.manifest.digest, layers, int(result.config["config"]["Size"]), used, result.output
    )


@pytest.fixture(scope="module")
def on_xfs(reflink_fs: Path, f16: Path) -> Built:
    with pytest.MonkeyPatch.context() as patch:
        return _build(reflink_fs / "build", f16, patch)


@xfs
def test_a_quantized_model_is_stored_once(on_xfs: Built) -> None:
    # The QUANTIZE output (the build cache's file, which estimate and smoke read) and its layer
    # share blocks; out/ hard-links the layer: about the model, where ext4 takes twice it.
    assert 100e6 < on_xfs.model < 200e6
    assert on_xfs.used <= 1.05 * on_xfs.model, (on_xfs.used, on_xfs.model)


@xfs
def test_the_layer_is_the_same_as_one_built_on_ext4(
    on_xfs: Built, f16: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # tmp_path: the machine's own filesystem (ext4 here and on GitHub's runners): copied there
    elsewhere = _build(tmp_path / "build", f16, monkeypatch)
    assert elsewhere.layers == on_xfs.layers
    assert elsewhere.manifest == on_xfs.manifest


@xfs
def test_the_store_unpacks_a_local_layout_by_sharing_its_blocks(
    on_xfs: Built, reflink_fs: Path
) -> None:
    before = _free(reflink_fs)
    model = Store(reflink_fs / "store").add_layout(on_xfs.output, "local/model:q8")
    used = before - _free(reflink_fs)
    assert model.model_file is not None and model.model_file.stat().st_size == on_xfs.model
    assert used <= 0.05 * on_xfs.model, used
    # the very GGUF QUANTIZE made, which the build cache keeps by its digest
    quantized = _sha(model.model_file).removeprefix("sha256:")
    assert (on_xfs.output.parent / "cache" / "build" / "blobs" / "sha256" / quantized).is_file()


@pytest.fixture
def xfs_dir(reflink_fs: Path, tmp_path: Path) -> Iterator[Path]:
    directory = reflink_fs / tmp_path.name
    directory.mkdir()
    yield directory
    remove_tree(directory)  # the next test measures this filesystem's free space


@xfs
def test_layers_clone_on_xfs_and_copy_from_elsewhere_to_the_same_bytes(
    xfs_dir: Path, big: Path
) -> None:
    local = xfs_dir / "model.gguf"
    local.write_bytes(big.read_bytes() * 16)  # 16 MiB
    entries = [LayerEntry("a", b"x" * 700), LayerEntry("m.gguf", local, hash_source=True)]
    before = _free(xfs_dir)
    cloned = _write(xfs_dir / "cloned.tar", entries)
    shared = before - _free(xfs_dir)
    # From another filesystem the clone is refused (EXDEV): a plain copy, silently, same bytes.
    elsewhere = big.parent / "m16"
    elsewhere.write_bytes(local.read_bytes())
    before = _free(xfs_dir)
    assert _write(xfs_dir / "copied.tar", [entries[0], LayerEntry("m.gguf", elsewhere)]) == cloned
    copied = before - _free(xfs_dir)
    elsewhere.unlink()
    assert shared < 0.05 * local.stat().st_size < 0.95 * local.stat().st_size < copied
    assert _sha(xfs_dir / "cloned.tar") == cloned


@xfs
def test_a_source_changed_after_its_clone_is_refused(
    xfs_dir: Path, big: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cloned bytes are the file as it was, the digest is of the bytes read after: a write
    # in between would make a layer that is not what its digest says.
    local = xfs_dir / "model.gguf"
    local.write_bytes(big.read_bytes())
    real = _layer_sink.clone_range

    def clone_then_write(*args: int) -> bool:
        done = real(*args)
        with local.open("r+b") as file:
            file.write(b"changed")
        os.utime(local, ns=(0, 0))  # an mtime of its own, whatever the clock's granularity
        return done

    monkeypatch.setattr(_layer_sink, "clone_range", clone_then_write)
    with pytest.raises(OCIError, match="changed while being written into the layer"):
        _write(xfs_dir / "layer.tar", [LayerEntry("m.gguf", local)])


@xfs
def test_a_blob_changed_after_its_clone_is_refused_by_the_store(
    xfs_dir: Path, big: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layer = xfs_dir / "layer.tar"
    digest = _write(layer, [LayerEntry("m.gguf", big)])
    descriptor = Descriptor("application/vnd.oci.image.layer.v1.tar", digest, layer.stat().st_size)
    real = _tarwrite.clone_head

    def clone_then_touch(*args: int) -> int | None:
        done = real(*args)
        os.utime(layer, ns=(0, 0))
        return done

    monkeypatch.setattr(_tarwrite, "clone_head", clone_then_touch)
    with pytest.raises(StoreError, match="the blob changed while it was unpacked"):
        unpack_layer(layer, descriptor, digest, xfs_dir / "unpacked", UnpackLimits())


def _image(out: Path, source: Path, compression: str = "none") -> Image:
    with LayoutWriter(out) as writer:
        entries = [LayerEntry("a", b"x" * 700), LayerEntry("m.gguf", source)]
        layer = writer.add_layer(entries, compression)
        config = {"os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]}}
        writer.tag(writer.add_image(config, [layer]), "latest")
    return read_layout(out)


@xfs
@pytest.mark.parametrize("paths", [["/m.gguf"], None], ids=["one-file", "whole"])
def test_unpack_of_a_local_layout_shares_its_blocks(
    xfs_dir: Path, big: Path, paths: list[str] | None
) -> None:
    # What estimate and smoke read: the image's files beside its layout on the same XFS.
    source = big.parent / "m16"
    source.write_bytes(big.read_bytes() * 16)  # 16 MiB, from another filesystem: no clone
    image = _image(xfs_dir / "layout", source)
    before = _free(xfs_dir)
    root = unpack(image, paths, base=xfs_dir / "images")
    used = before - _free(xfs_dir)
    assert _sha(root / "m.gguf") == _sha(source)
    assert used <= 0.05 * source.stat().st_size, used  # a copy: 1.0x
    # gzip: nothing to share, the bytes are written (the same ones)
    zipped = _image(xfs_dir / "zipped", source, "gzip")
    before = _free(xfs_dir)
    root = unpack(zipped, paths, base=xfs_dir / "images")
    assert before - _free(xfs_dir) >= 0.95 * source.stat().st_size
    assert _sha(root / "m.gguf") == _sha(source)
    source.unlink()


@xfs
def test_a_blob_changed_after_its_clone_is_refused_by_extract(
    xfs_dir: Path, big: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = _image(xfs_dir / "layout", big)
    layer = image.blob_path(image.layers[0].digest)
    real = _extract_write.clone_head

    def clone_then_touch(*args: int) -> int | None:
        done = real(*args)
        os.utime(layer, ns=(0, 0))
        return done

    monkeypatch.setattr(_extract_write, "clone_head", clone_then_touch)
    with pytest.raises(OCIError, match="the blob changed while it was extracted"):
        extract(image, "/m.gguf", xfs_dir / "m.gguf")
    assert sorted(p.name for p in xfs_dir.iterdir()) == ["layout"]
