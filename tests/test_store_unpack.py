"""Hostile layers: the store refuses them with a clear error and stores nothing.

Each case is a real OCI layout whose layer tar is written by hand (the layout writer would never
produce one), imported with ``Store.add_layout``; the store's files before and after must match.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from harness.oci import OCI_LAYER, OCI_LAYER_GZIP, Descriptor, LayerEntry, LayoutWriter
from harness.store import Store, StoreError, UnpackLimits, UnsafeLayerError

Member = Callable[[tarfile.TarFile], None]


def _file(name: str, data: bytes = b"x", mode: int = 0o644) -> Member:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), mode
        tar.addfile(info, io.BytesIO(data))

    return add


def _special(name: str, kind: bytes, link: str = "") -> Member:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, link
        info.mode = 0o755 if kind in (tarfile.DIRTYPE, tarfile.SYMTYPE) else 0o644
        tar.addfile(info)

    return add


def _tar(members: Sequence[Member]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for add in members:
            add(tar)
    return buffer.getvalue()


def _layout(path: Path, layers: Sequence[Sequence[Member]], gzip_level: int = 1) -> Path:
    """A layout whose image has one hand-written gzip tar layer per entry of ``layers``."""
    with LayoutWriter(path) as writer:
        descriptors, diff_ids = [], []
        for members in layers:
            raw = _tar(members)
            diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
            descriptors.append(writer.add_blob(gzip.compress(raw, gzip_level), OCI_LAYER_GZIP))
        config = {
            "architecture": "amd64",
            "config": {"Cmd": ["-m", "/m.gguf"]},
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        writer.tag(writer.add_image(config, descriptors), "v1")
    return path


def _snapshot(root: Path) -> dict[str, str]:
    found = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = "-> " + str(path.readlink())
        elif path.is_file():
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[rel] = "dir"
    return found


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """A store that already holds one good model, so that "unchanged" means something."""
    result = Store(tmp_path / "store", limits=UnpackLimits(max_ratio=20, ratio_floor=1 << 20))
    good = _layout(tmp_path / "good", [[_file("m.gguf", b"GGUF" * 100)]])
    result.add_layout(good, "127.0.0.1:1/good:v1")
    return result


HOSTILE = {
    "dotdot": ([[_file("../x")]], "leads out of the model root"),
    "dotdot-inside": ([[_file("models/../../x")]], "leads out of the model root"),
    "absolute": ([[_file("/etc/x")]], "is an absolute path"),
    "absolute-symlink": ([[_special("ln", tarfile.SYMTYPE, "/etc/passwd")]], "is absolute"),
    "escaping-symlink": (
        [[_special("ln", tarfile.SYMTYPE, "../../outside")]],
        "out of the model root",
    ),
    "symlink-chain": (
        [
            [
                _special("d", tarfile.DIRTYPE),
                _special("d/up", tarfile.SYMTYPE, ".."),
                _special("esc", tarfile.SYMTYPE, "d/up/.."),
            ]
        ],
        "out of the model root",
    ),
    "through-symlink": (
        [[_special("ln", tarfile.SYMTYPE, "sub"), _file("ln/x")]],
        "lies under 'ln', a symlink",
    ),
    "through-symlink-of-lower-layer": (
        [
            [_special("sub", tarfile.DIRTYPE), _special("ln", tarfile.SYMTYPE, "sub")],
            [_file("ln/x")],
        ],
        "lies under 'ln', which is a symlink",
    ),
    "char-device": ([[_special("dev", tarfile.CHRTYPE)]], "is a device file"),
    "block-device": ([[_special("dev", tarfile.BLKTYPE)]], "is a device file"),
    "fifo": ([[_special("pipe", tarfile.FIFOTYPE)]], "is a FIFO"),
    "dangling-hardlink": (
        [[_special("h", tarfile.LNKTYPE, "nowhere")]],
        "not an earlier regular file",
    ),
    "hardlink-out": ([[_special("h", tarfile.LNKTYPE, "../etc/passwd")]], "out of the model root"),
    "empty-whiteout": ([[_file(".wh..")]], "names nothing"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_layer_is_refused_and_nothing_is_stored(
    case: str, store: Store, tmp_path: Path
) -> None:
    layers, message = HOSTILE[case]
    layout = _layout(tmp_path / case, layers)
    before = _snapshot(store.root)
    with pytest.raises(UnsafeLayerError) as caught:
        store.add_layout(layout, f"127.0.0.1:1/{case}:v1")
    assert message in str(caught.value)
    assert _snapshot(store.root) == before
    assert list((store.root / "tmp").iterdir()) == []


def test_decompression_bomb_is_refused_before_it_fills_the_disk(
    store: Store, tmp_path: Path
) -> None:
    zeros = bytes(8 << 20)  # 8 MiB that gzip turns into ~8 KiB: a 1000x expansion
    layout = _layout(tmp_path / "bomb", [[_file("zeros.bin", zeros)]], gzip_level=9)
    before = _snapshot(store.root)
    with pytest.raises(UnsafeLayerError, match="decompression bomb"):
        store.add_layout(layout, "127.0.0.1:1/bomb:v1")
    assert _snapshot(store.root) == before


def test_tampered_layer_is_refused(store: Store, tmp_path: Path) -> None:
    layout = _layout(tmp_path / "tampered", [[_file("m.gguf", b"GGUF" * 1000)]])
    index = json.loads((layout / "index.json").read_text())
    manifest_path = layout / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]
    layer = json.loads(manifest_path.read_text())["layers"][0]
    blob = layout / "blobs" / "sha256" / layer["digest"][7:]
    data = bytearray(gzip.decompress(blob.read_bytes()))
    data[600] ^= 1  # inside the file's bytes; recompressed, so the gzip stream stays valid
    blob.write_bytes(gzip.compress(bytes(data))[: layer["size"]].ljust(layer["size"], b"\0"))
    before = _snapshot(store.root)
    with pytest.raises(StoreError):
        store.add_layout(layout, "127.0.0.1:1/tampered:v1")
    assert _snapshot(store.root) == before


def test_safe_links_whiteouts_and_hardlinks_are_kept(store: Store, tmp_path: Path) -> None:
    lower = [
        _file("models/m.gguf", b"GGUF-lower"),
        _file("models/old.txt", b"old"),
        _file("etc/a/b.txt", b"b"),
    ]
    upper = [
        _special("models/current.gguf", tarfile.SYMTYPE, "m.gguf"),
        _special("models/up.gguf", tarfile.SYMTYPE, "../models/./m.gguf"),
        _file("models/.wh.old.txt", b""),
        _file("etc/.wh..wh..opq", b""),
        _file("etc/new.txt", b"new"),
        _special("models/same.gguf", tarfile.LNKTYPE, "models/m.gguf"),
    ]
    model = store.add_layout(_layout(tmp_path / "safe", [lower, upper]), "127.0.0.1:1/safe:v1")
    root = model.root
    assert (root / "models" / "current.gguf").read_bytes() == b"GGUF-lower"
    assert (root / "models" / "up.gguf").read_bytes() == b"GGUF-lower"
    assert not (root / "models" / "old.txt").exists()
    assert not (root / "etc" / "a").exists() and (root / "etc" / "new.txt").read_text() == "new"
    assert (root / "models" / "same.gguf").stat().st_ino == (
        root / "models" / "m.gguf"
    ).stat().st_ino


def test_uncompressed_tar_layers(store: Store, tmp_path: Path) -> None:
    raw = _tar([_file("m.gguf", b"GGUF" * 10)])
    with LayoutWriter(tmp_path / "plain") as writer:
        layer = writer.add_blob(raw, OCI_LAYER)
        config = {"config": {}, "rootfs": {"type": "layers", "diff_ids": [layer.digest]}}
        writer.tag(
            writer.add_image(config, [Descriptor(OCI_LAYER, layer.digest, layer.size)]), "v1"
        )
    model = store.add_layout(tmp_path / "plain", "127.0.0.1:1/plain:v1")
    assert (model.root / "m.gguf").read_bytes() == b"GGUF" * 10


def test_layer_entries_from_the_layout_writer_round_trip(store: Store, tmp_path: Path) -> None:
    with LayoutWriter(tmp_path / "lw") as writer:
        layer = writer.add_layer([LayerEntry("/a/b/c.gguf", b"GGUF!", mode=0o600)], "zstd")
        config = {"config": {}, "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]}}
        writer.tag(writer.add_image(config, [layer]), "v1")
    model = store.add_layout(tmp_path / "lw", "127.0.0.1:1/lw:v1")
    path = model.path("/a/b/c.gguf")
    assert path.read_bytes() == b"GGUF!"
    assert path.stat().st_mode & 0o222 == 0  # read-only: shared by every model using it
