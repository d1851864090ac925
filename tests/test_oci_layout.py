"""OCI image layout: write, read back, verify, merge layers, extract safely."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.oci import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    REF_NAME,
    Descriptor,
    Image,
    LayerEntry,
    LayoutWriter,
    OCIError,
    canonical_json,
    extract,
    files,
    read_layout,
)


def _config(diff_ids: Iterable[str], labels: dict[str, str] | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {"architecture": "amd64", "os": "linux"}
    if labels:
        config["config"] = {"Labels": labels}
    config["rootfs"] = {"type": "layers", "diff_ids": list(diff_ids)}
    return config


def _build(
    out: Path,
    entries: list[LayerEntry],
    compression: str = "gzip",
    tag: str = "latest",
    labels: dict[str, str] | None = None,
) -> Descriptor:
    with LayoutWriter(out) as writer:
        layer = writer.add_layer(entries, compression)
        manifest = writer.add_image(_config([layer.diff_id], labels), [layer])
        writer.tag(manifest, tag)
    return manifest


def _entries(tmp_path: Path) -> list[LayerEntry]:
    model = tmp_path / "src" / "model.gguf"
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_bytes(os.urandom(300_000) + b"GGUF" * 1000)
    return [
        LayerEntry("/app/model.gguf", model),
        LayerEntry("app/prompts/system.txt", b"You are helpful.\n", mode=0o600, uid=1000, gid=100),
        LayerEntry("/readme", b""),
    ]


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != "src")


# --- round trips --------------------------------------------------------------------------------


def test_round_trip_files_and_extract(tmp_path: Path) -> None:
    entries = _entries(tmp_path)
    out = tmp_path / "layout"
    manifest = _build(out, entries, labels={"gguf.model.usage": "text-to-text"})

    image = read_layout(out, "latest")
    assert image.descriptor.digest == manifest.digest
    assert image.ref_name == "latest"
    assert image.labels == {"gguf.model.usage": "text-to-text"}
    assert json.loads((out / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert image.manifest["mediaType"] == OCI_MANIFEST
    assert image.config_descriptor.media_type == OCI_CONFIG
    assert [layer.media_type for layer in image.layers] == [OCI_LAYER_GZIP]

    listing = files(image)
    assert list(listing) == [
        "/app",
        "/app/model.gguf",
        "/app/prompts",
        "/app/prompts/system.txt",
        "/readme",
    ]
    assert listing["/app"].kind == "dir" and listing["/app"].mode == 0o755
    prompt = listing["/app/prompts/system.txt"]
    assert (prompt.mode, prompt.uid, prompt.gid, prompt.size) == (0o600, 1000, 100, 17)

    model = extract(image, "/app/model.gguf", tmp_path / "model.gguf")
    assert model.read_bytes() == (tmp_path / "src" / "model.gguf").read_bytes()
    tree = extract(image, "/app", tmp_path / "tree")
    assert (tree / "prompts" / "system.txt").read_bytes() == b"You are helpful.\n"
    assert (tree / "model.gguf").stat().st_size == model.stat().st_size


def test_dir_colon_tag_and_tag_selection(tmp_path: Path) -> None:
    out = tmp_path / "layout"
    with LayoutWriter(out) as writer:
        one = writer.add_layer([LayerEntry("a", b"1")])
        two = writer.add_layer([LayerEntry("a", b"2")])
        first = writer.add_image(_config([one.diff_id]), [one])
        second = writer.add_image(_config([two.diff_id]), [two])
        writer.tag(first, "v1")
        writer.tag(second, "v2")
        writer.tag(second, "latest")
    assert read_layout(f"{out}:v1").descriptor.digest == first.digest
    assert read_layout(out, "latest").descriptor.digest == second.digest
    with pytest.raises(OCIError, match=r"holds 3 images; name one \(tags: latest, v1, v2\)"):
        read_layout(out)
    with pytest.raises(OCIError, match="no image tagged 'nope'"):
        read_layout(out, "nope")
    with (
        pytest.raises(OCIError, match="not a valid OCI reference name"),
        LayoutWriter(tmp_path / "bad") as writer,
    ):
        writer.tag(first, "has space")
    assert not (tmp_path / "bad").exists()


def test_untagged_image_is_the_only_manifest(tmp_path: Path) -> None:
    out = tmp_path / "layout"
    with LayoutWriter(out) as writer:
        layer = writer.add_layer([LayerEntry("x", b"x")], "none")
        manifest = writer.add_image(_config([layer.diff_id]), [layer])
    index = json.loads((out / "index.json").read_text())
    assert index["mediaType"] == OCI_INDEX
    assert [m["digest"] for m in index["manifests"]] == [manifest.digest]
    assert read_layout(out).ref_name is None


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_compressions(tmp_path: Path, compression: str) -> None:
    if compression == "zstd":
        pytest.importorskip("zstandard")
    entries = _entries(tmp_path)
    out = tmp_path / "layout"
    _build(out, entries, compression)
    image = read_layout(out)
    layer = image.layers[0]
    media = {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD, "none": OCI_LAYER}[compression]
    assert layer.media_type == media
    blob = image.blob_path(layer.digest).read_bytes()
    assert "sha256:" + hashlib.sha256(blob).hexdigest() == layer.digest
    if compression == "none":
        assert image.diff_ids == (layer.digest,)
    if compression == "gzip":
        assert blob[:3] == b"\x1f\x8b\x08"
        assert blob[3] & 0x08 == 0, "gzip header must not carry a file name"
        assert blob[4:8] == b"\0\0\0\0", "gzip header mtime must be 0"
        assert "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest() == image.diff_ids[0]
    extracted = extract(image, "/app/model.gguf", tmp_path / "out.gguf")
    assert extracted.read_bytes() == (tmp_path / "src" / "model.gguf").read_bytes()


def test_tar_is_reproducible_in_form(tmp_path: Path) -> None:
    out = tmp_path / "layout"
    _build(out, [LayerEntry("b/z", b"z"), LayerEntry("a-b", b"1"), LayerEntry("a/c/d", b"2")])
    image = read_layout(out)
    with tarfile.open(image.blob_path(image.layers[0].digest)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["a", "a/c", "a/c/d", "a-b", "b", "b/z"]
    for member in members:
        assert (member.uid, member.gid, member.uname, member.gname, member.mtime) == (
            0,
            0,
            "",
            "",
            0,
        )
        assert member.mode == (0o755 if member.isdir() else 0o644)


# --- determinism --------------------------------------------------------------------------------


def _digests(out: Path, entries: list[LayerEntry], compression: str) -> tuple[str, str]:
    manifest = _build(out, entries, compression)
    image = read_layout(out)
    return manifest.digest, image.diff_ids[0]


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_same_inputs_same_digests(tmp_path: Path, compression: str) -> None:
    entries = _entries(tmp_path)
    first = _digests(tmp_path / "one", entries, compression)
    # Entry order and the source file's own mtime must not matter.
    os.utime(tmp_path / "src" / "model.gguf", (1, 1))
    second = _digests(tmp_path / "two", list(reversed(entries)), compression)
    assert first == second


def test_source_date_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entries = _entries(tmp_path)
    default = _digests(tmp_path / "default", entries, "gzip")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    pinned = _digests(tmp_path / "pinned", entries, "gzip")
    again = _digests(tmp_path / "again", entries, "gzip")
    assert pinned == again
    assert pinned[1] != default[1]
    image = read_layout(tmp_path / "pinned")
    assert {f.mtime for f in files(image).values()} == {1700000000}
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(OCIError, match="SOURCE_DATE_EPOCH"):
        _digests(tmp_path / "bad", entries, "gzip")
    assert not (tmp_path / "bad").exists()


def test_canonical_json_keeps_key_order_and_is_compact() -> None:
    assert canonical_json({"b": 1, "a": [1, "é"]}) == '{"b":1,"a":[1,"é"]}'.encode()
    with pytest.raises(OCIError, match="cannot be written as JSON"):
        canonical_json({"x": float("nan")})


# --- all or nothing -----------------------------------------------------------------------------


class Boom(Exception):
    pass


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_exception_mid_write_leaves_nothing(tmp_path: Path, error: type[BaseException]) -> None:
    out = tmp_path / "layout"
    with pytest.raises(error), LayoutWriter(out) as writer:
        writer.add_layer(_entries(tmp_path))
        raise error()
    assert not out.exists()
    assert _siblings(out) == []


def test_failure_keeps_the_old_layout_and_success_replaces_it(tmp_path: Path) -> None:
    out = tmp_path / "layout"
    old = _build(out, [LayerEntry("v", b"old")])
    with pytest.raises(OCIError), LayoutWriter(out) as writer:
        writer.add_layer([LayerEntry("v", tmp_path / "missing-file")])
    assert read_layout(out).descriptor.digest == old.digest
    new = _build(out, [LayerEntry("v", b"new")])
    assert read_layout(out).descriptor.digest == new.digest != old.digest
    assert _siblings(out) == ["layout"]


def test_what_a_killed_writer_left_is_recovered_by_the_next(tmp_path: Path) -> None:
    """kill -9 between moving the old layout aside and renaming the new one in: the next writer
    puts the old one back (then replaces it as asked) and sweeps the half-written one."""
    out = tmp_path / "layout"
    old = _build(out, [LayerEntry("v", b"old")])
    dead = 2**22 + 1  # above pid_max's default, so no process has it
    out.rename(tmp_path / f".layout.old-{dead}-0000")
    (tmp_path / f".layout.tmp-{dead}-0000" / "blobs").mkdir(parents=True)
    with LayoutWriter(tmp_path / "other"):
        pass  # another layout's writer leaves this one's leftovers alone
    assert not out.exists() and len([n for n in _siblings(out) if n.startswith(".")]) == 2
    with pytest.raises(OCIError), LayoutWriter(out) as writer:
        writer.add_layer([LayerEntry("v", tmp_path / "missing-file")])
    assert read_layout(out).descriptor.digest == old.digest  # the old layout is back
    assert _siblings(out) == ["layout", "other"]


def test_refuses_to_replace_a_directory_that_is_not_a_layout(tmp_path: Path) -> None:
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(OCIError, match="not an OCI layout"), LayoutWriter(precious):
        pass
    assert (precious / "notes.txt").read_text() == "keep me"


def test_layout_modes_follow_the_umask(tmp_path: Path) -> None:
    # A registry or daemon running as another user must be able to read the layout.
    previous = os.umask(0o022)
    try:
        out = tmp_path / "layout"
        _build(out, [LayerEntry("a", b"a")])
    finally:
        os.umask(previous)
    assert out.stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in out.rglob("*") if p.is_file()} == {0o644}


def test_writer_outside_with_block(tmp_path: Path) -> None:
    with pytest.raises(OCIError, match="outside its 'with' block"):
        LayoutWriter(tmp_path / "x").add_blob(b"x", "text/plain")


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([LayerEntry("../x", b"")], "not a plain in-image path"),
        ([LayerEntry("a/./b", b"")], "not a plain in-image path"),
        ([LayerEntry("/", b"")], "not a plain in-image path"),
        ([LayerEntry("a", b""), LayerEntry("/a", b"")], "given twice"),
        ([LayerEntry("a", b""), LayerEntry("a/b", b"")], "is a file but"),
        ([LayerEntry("a", b"", mode=0o10000)], "mode"),
    ],
)
def test_bad_layer_entries(tmp_path: Path, entries: list[LayerEntry], message: str) -> None:
    out = tmp_path / "layout"
    with pytest.raises(OCIError, match=message), LayoutWriter(out) as writer:
        writer.add_layer(entries)
    assert not out.exists()


def test_rootfs_must_match_layers(tmp_path: Path) -> None:
    with pytest.raises(OCIError, match=r"rootfs\.diff_ids"), LayoutWriter(tmp_path / "o") as writer:
        layer = writer.add_layer([LayerEntry("a", b"a")])
        writer.add_image(_config(["sha256:" + "0" * 64]), [layer])


# --- verification -------------------------------------------------------------------------------


def _flip_byte(path: Path, at: int) -> None:
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_corrupted_layer_blob(tmp_path: Path, compression: str) -> None:
    if compression == "zstd":
        pytest.importorskip("zstandard")
    out = tmp_path / "layout"
    _build(out, _entries(tmp_path), compression)
    image = read_layout(out)
    blob = image.blob_path(image.layers[0].digest)
    _flip_byte(blob, blob.stat().st_size // 2)
    with pytest.raises(OCIError, match="blob digest mismatch") as caught:
        files(image)
    assert caught.value.location is not None and caught.value.location.path == str(blob)
    dest = tmp_path / "model.gguf"
    with pytest.raises(OCIError, match="digest mismatch"):
        extract(image, "/app/model.gguf", dest)
    assert not dest.exists()
    assert _siblings(dest) == ["layout"]


def test_corrupted_and_truncated_manifest_and_config(tmp_path: Path) -> None:
    out = tmp_path / "layout"
    manifest = _build(out, [LayerEntry("a", b"a")])
    image = read_layout(out)
    config_blob = image.blob_path(image.config_descriptor.digest)
    _flip_byte(config_blob, 3)
    with pytest.raises(OCIError, match="blob digest mismatch"):
        read_layout(out)
    manifest_blob = image.blob_path(manifest.digest)
    manifest_blob.chmod(0o644)
    manifest_blob.write_bytes(manifest_blob.read_bytes()[:-1])
    with pytest.raises(OCIError, match="blob size mismatch"):
        read_layout(out)
    manifest_blob.unlink()
    with pytest.raises(OCIError, match="is missing"):
        read_layout(out)


@pytest.mark.parametrize(
    ("index", "message"),
    [
        (b'{"schemaVersion": 2, "manifests": [', "malformed JSON"),
        (b'{"schemaVersion": 2}', "manifests: missing or not a list"),
        (b'{"manifests": [{"mediaType": "x", "size": 1}]}', "manifests\\[0\\].digest"),
        (
            b'{"manifests": [{"mediaType": "x", "size": 1, "digest": "sha256:../../etc"}]}',
            "not a sha256/sha512 digest",
        ),
        (
            b'{"manifests": [{"mediaType": "x", "size": -1, "digest": "sha256:'
            + b"a" * 64
            + b'"}]}',
            "manifests\\[0\\].size",
        ),
    ],
)
def test_malformed_index(tmp_path: Path, index: bytes, message: str) -> None:
    out = tmp_path / "layout"
    _build(out, [LayerEntry("a", b"a")])
    (out / "index.json").write_bytes(index)
    with pytest.raises(OCIError, match=message) as caught:
        read_layout(out)
    assert caught.value.location is not None
    assert caught.value.location.path == str(out / "index.json")
    if message == "malformed JSON":
        assert caught.value.location.offset == len(index)


def test_not_a_layout(tmp_path: Path) -> None:
    with pytest.raises(OCIError, match="no oci-layout file"):
        read_layout(tmp_path)
    with pytest.raises(OCIError, match="no OCI layout directory"):
        read_layout(tmp_path / "missing:tag")


# --- a hand-made layout: raw tars, Docker media types, indexes ----------------------------------


TarMember = tuple[str, bytes, bytes | str | None]  # name, type, data or link target


def _tar(members: list[TarMember]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                assert isinstance(payload, str)
                info.linkname = payload
                tar.addfile(info)
            elif isinstance(payload, bytes):
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                tar.addfile(info)
    return buffer.getvalue()


def _raw_image(
    out: Path,
    layers: list[list[TarMember] | bytes],
    *,
    docker: bool = False,
    wrap: Callable[[LayoutWriter, Descriptor], Descriptor] | None = None,
) -> None:
    layer_type = DOCKER_LAYER_GZIP if docker else OCI_LAYER
    with LayoutWriter(out) as writer:
        tars = [m if isinstance(m, bytes) else _tar(m) for m in layers]
        blobs = [gzip.compress(t, mtime=0) if docker else t for t in tars]
        descriptors = [writer.add_blob(blob, layer_type) for blob in blobs]
        diff_ids = ["sha256:" + hashlib.sha256(t).hexdigest() for t in tars]
        config = writer.add_blob(
            canonical_json(_config(diff_ids)), DOCKER_CONFIG if docker else OCI_CONFIG
        )
        manifest = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
            "config": config.to_json(),
            "layers": [d.to_json() for d in descriptors],
        }
        stored = writer.add_blob(
            canonical_json(manifest), DOCKER_MANIFEST if docker else OCI_MANIFEST
        )
        writer.tag(wrap(writer, stored) if wrap else stored, "latest")


def test_docker_schema2_media_types(tmp_path: Path) -> None:
    out = tmp_path / "layout"
    _raw_image(out, [[("app/m.gguf", tarfile.REGTYPE, b"weights")]], docker=True)
    image = read_layout(out, "latest")
    assert image.descriptor.media_type == DOCKER_MANIFEST
    assert image.config_descriptor.media_type == DOCKER_CONFIG
    assert extract(image, "/app/m.gguf", tmp_path / "m").read_bytes() == b"weights"


def test_index_followed_to_linux_amd64(tmp_path: Path) -> None:
    def wrap(writer: LayoutWriter, manifest: Descriptor) -> Descriptor:
        entries = [
            {**manifest.to_json(), "platform": {"architecture": "arm64", "os": "linux"}},
            {**manifest.to_json(), "platform": {"architecture": "unknown", "os": "unknown"}},
            {**manifest.to_json(), "platform": {"architecture": "amd64", "os": "linux"}},
        ]
        entries[0]["digest"] = "sha256:" + "1" * 64  # would fail if chosen: no such blob
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        return writer.add_blob(canonical_json(index), OCI_INDEX)

    out = tmp_path / "layout"
    _raw_image(out, [[("a", tarfile.REGTYPE, b"a")]], wrap=wrap)
    image = read_layout(out, "latest")
    assert image.descriptor.platform == {"architecture": "amd64", "os": "linux"}
    assert image.ref_name == "latest"
    with pytest.raises(OCIError, match="is missing"):
        read_layout(out, "latest", platform=("linux", "arm64"))


def test_whiteouts_and_later_layers_win(tmp_path: Path) -> None:
    out = tmp_path / "layout"
    _raw_image(
        out,
        [
            [
                ("app/", tarfile.DIRTYPE, None),
                ("app/keep", tarfile.REGTYPE, b"v1"),
                ("app/gone", tarfile.REGTYPE, b"x"),
                ("app/sub/deep", tarfile.REGTYPE, b"x"),
                ("opaque/old", tarfile.REGTYPE, b"x"),
                ("swap", tarfile.REGTYPE, b"file"),
            ],
            [
                ("app/keep", tarfile.REGTYPE, b"v2"),
                ("app/.wh.gone", tarfile.REGTYPE, b""),
                ("app/.wh.sub", tarfile.REGTYPE, b""),
                ("opaque/.wh..wh..opq", tarfile.REGTYPE, b""),
                ("opaque/new", tarfile.REGTYPE, b"n"),
                ("swap/inner", tarfile.REGTYPE, None),
            ],
        ],
    )
    image = read_layout(out)
    with pytest.raises(OCIError, match="lies under '/swap', which is a file"):
        files(image)

    _raw_image(
        out,
        [
            [
                ("app/keep", tarfile.REGTYPE, b"v1"),
                ("app/gone", tarfile.REGTYPE, b"x"),
                ("app/sub/deep", tarfile.REGTYPE, b"x"),
                ("opaque/old", tarfile.REGTYPE, b"x"),
                ("dir-becomes-file/x", tarfile.REGTYPE, b"x"),
            ],
            [
                ("app/keep", tarfile.REGTYPE, b"v2"),
                ("app/.wh.gone", tarfile.REGTYPE, b""),
                ("app/.wh.sub", tarfile.REGTYPE, b""),
                ("opaque/.wh..wh..opq", tarfile.REGTYPE, b""),
                ("opaque/new", tarfile.REGTYPE, b"n"),
                ("dir-becomes-file", tarfile.REGTYPE, b"f"),
            ],
        ],
    )
    image = read_layout(out)
    listing = files(image)
    assert list(listing) == ["/app", "/app/keep", "/dir-becomes-file", "/opaque", "/opaque/new"]
    assert listing["/app/keep"].layer == 1
    assert extract(image, "/app/keep", tmp_path / "keep").read_bytes() == b"v2"
    tree = extract(image, "/", tmp_path / "root")
    assert sorted(str(p.relative_to(tree)) for p in tree.rglob("*")) == [
        "app",
        "app/keep",
        "dir-becomes-file",
        "opaque",
        "opaque/new",
    ]


def test_links_inside_the_image(tmp_path: Path) -> None:
    out = tmp_path / "layout"
    _raw_image(
        out,
        [
            [
                ("models/real.gguf", tarfile.REGTYPE, b"weights"),
                ("models/hard.gguf", tarfile.LNKTYPE, "models/real.gguf"),
                ("models/current", tarfile.SYMTYPE, "real.gguf"),
                ("latest", tarfile.SYMTYPE, "/models/current"),
            ]
        ],
    )
    image = read_layout(out)
    listing = files(image)
    assert listing["/models/hard.gguf"].kind == "hardlink"
    assert listing["/models/hard.gguf"].size == 7
    # A symlink named by the caller is followed inside the image, absolute targets included.
    assert extract(image, "/latest", tmp_path / "via-link").read_bytes() == b"weights"
    tree = extract(image, "/models", tmp_path / "models")
    assert (tree / "hard.gguf").read_bytes() == b"weights"
    assert os.readlink(tree / "current") == "real.gguf"
    assert (tree / "current").read_bytes() == b"weights"


# --- hostile layers -----------------------------------------------------------------------------


def test_empty_tar_layer_is_fine(tmp_path: Path) -> None:
    out = tmp_path / "layout"
    _raw_image(out, [bytes(1024), [("a", tarfile.REGTYPE, b"a")]])
    assert list(files(read_layout(out))) == ["/a"]


@pytest.mark.parametrize("where", ["mid-stream", "after the end marker"])
def test_malformed_tar_with_a_valid_digest(tmp_path: Path, where: str) -> None:
    # tarfile stops quietly at a bad header; the layer must still be refused, not truncated.
    good = _tar([("a", tarfile.REGTYPE, b"a" * 10), ("b", tarfile.REGTYPE, b"b")])
    # Blocks: a's header, a's data, b's header (at 1024), b's data, then zeros.
    if where == "mid-stream":
        bad = good[:1024] + b"garbage!" * 64 + good[1536:]
    else:
        bad = good + b"trailing"
    out = tmp_path / "layout"
    _raw_image(out, [bad])
    with pytest.raises(OCIError, match=r"malformed header or stray data .* \(at tar byte \d+\)"):
        files(read_layout(out))


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([("../evil", tarfile.REGTYPE, b"x")], "escapes the root"),
        ([("a/../../evil", tarfile.REGTYPE, b"x")], "escapes the root"),
        ([("/etc/evil", tarfile.REGTYPE, b"x")], "is absolute"),
        ([("link", tarfile.SYMTYPE, "/etc"), ("link/passwd", tarfile.REGTYPE, b"x")], "symlink"),
        ([("hard", tarfile.LNKTYPE, "../../etc/passwd")], "escapes the root"),
        ([("hard", tarfile.LNKTYPE, "missing")], "not an earlier regular file"),
    ],
)
def test_hostile_names_are_refused(tmp_path: Path, members: list[TarMember], message: str) -> None:
    out = tmp_path / "layout"
    _raw_image(out, [members])
    image = read_layout(out)
    with pytest.raises(OCIError, match=message):
        files(image)
    with pytest.raises(OCIError, match=message):
        extract(image, "/", tmp_path / "root")
    assert not (tmp_path / "root").exists()
    assert _siblings(tmp_path / "root") == ["layout"]


@pytest.mark.parametrize(
    ("members", "path", "message"),
    [
        ([("up", tarfile.SYMTYPE, "../../etc/passwd")], "/up", "leads above the image root"),
        ([("d/up", tarfile.SYMTYPE, "../../x")], "/d", "leads above the extracted tree"),
        ([("d/abs", tarfile.SYMTYPE, "/etc/passwd")], "/d", "leaves the extracted tree"),
        ([("d/abs", tarfile.SYMTYPE, "/d/ok")], "/", "leaves the extracted tree"),
        # A lexical check passes this one; resolving the "." link first shows the escape.
        (
            [("d/dot", tarfile.SYMTYPE, "."), ("d/esc", tarfile.SYMTYPE, "dot/../x")],
            "/d",
            "leads above the extracted tree",
        ),
        ([("d/loop", tarfile.SYMTYPE, "loop")], "/d", "too many levels"),
        ([("d/dev", tarfile.CHRTYPE, None)], "/d", "is a device"),
        ([("d/fifo", tarfile.FIFOTYPE, None)], "/d", "is a fifo"),
        ([("dev", tarfile.CHRTYPE, None)], "/dev", "only files can be extracted"),
    ],
)
def test_extraction_refusals(
    tmp_path: Path, members: list[TarMember], path: str, message: str
) -> None:
    out = tmp_path / "layout"
    _raw_image(out, [[("d/ok", tarfile.REGTYPE, b"ok"), *members]])
    image = read_layout(out)
    files(image)  # listing is fine; only writing these out is refused
    dest = tmp_path / "dest"
    with pytest.raises(OCIError, match=message):
        extract(image, path, dest)
    assert not dest.exists()
    assert _siblings(dest) == ["layout"]


def test_extract_destination_rules(tmp_path: Path) -> None:
    out = tmp_path / "layout"
    _build(out, [LayerEntry("d/f", b"f")])
    image: Image = read_layout(out)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(OCIError, match="not empty"):
        extract(image, "/d", busy)
    with pytest.raises(OCIError, match="is a directory"):
        extract(image, "/d/f", busy)
    with pytest.raises(OCIError, match="parent directory does not exist"):
        extract(image, "/d/f", tmp_path / "no" / "f")
    with pytest.raises(OCIError, match="not in the image"):
        extract(image, "/nope", tmp_path / "nope")
    existing = tmp_path / "f"
    existing.write_text("old")
    assert extract(image, "d/f", existing).read_bytes() == b"f"
    assert image.blob_path(image.layers[0].digest).is_file()
    assert REF_NAME == "org.opencontainers.image.ref.name"


# --- property: any set of plain paths round-trips -----------------------------------------------

_component = st.text(alphabet=st.sampled_from("abcXYZ019-_.é漢 "), min_size=1, max_size=40).filter(
    lambda c: c not in (".", "..") and not c.startswith(".wh.")
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    tree=st.dictionaries(
        st.lists(_component, min_size=1, max_size=4).map("/".join),
        st.binary(max_size=2000),
        min_size=1,
        max_size=6,
    )
)
def test_any_plain_paths_round_trip(tmp_path: Path, tree: dict[str, bytes]) -> None:
    names = sorted(tree)
    if any(b.startswith(a + "/") for a in names for b in names):
        return  # a file cannot also be a directory
    out = tmp_path / "prop"
    first = _build(out, [LayerEntry(name, data) for name, data in tree.items()])
    image = read_layout(out)
    listing = files(image)
    assert {p[1:] for p, f in listing.items() if f.kind == "file"} == set(tree)
    for name, data in tree.items():
        assert listing["/" + name].size == len(data)
    name = names[0]
    assert extract(image, name, tmp_path / "one").read_bytes() == tree[name]
    assert _build(tmp_path / "again", [LayerEntry(n, d) for n, d in tree.items()]) == first


def test_unpacked_modes_drop_setuid_and_world_write(tmp_path: Path) -> None:
    from harness.oci._extract import unpacked_mode

    out = tmp_path / "layout"
    _build(
        out,
        [
            LayerEntry("/app/suid", b"x", mode=0o4755),
            LayerEntry("/app/open", b"y", mode=0o666),
            LayerEntry("/app/plain", b"z", mode=0o640),
        ],
    )
    image = read_layout(out, "latest")
    tree = extract(image, "/app", tmp_path / "tree")
    modes = {p.name: p.stat().st_mode & 0o7777 for p in tree.iterdir()}
    assert modes == {"suid": 0o755, "open": 0o664, "plain": 0o640}
    assert extract(image, "/app/open", tmp_path / "one").stat().st_mode & 0o7777 == 0o664
    # directories: a sticky one (/tmp's 01777) keeps its bit; others lose world-write
    assert unpacked_mode(0o41777, directory=True) == 0o1777
    assert unpacked_mode(0o40777, directory=True) == 0o775
    assert unpacked_mode(0o6755, directory=True) == 0o755


def test_a_decompression_bomb_layer_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    zeros = tmp_path / "zeros"
    with zeros.open("wb") as out:
        out.truncate(200 << 20)  # 200 MiB of zeros: gzip makes ~200 KiB of it (1000x)
    out_dir = tmp_path / "layout"
    _build(out_dir, [LayerEntry("/model.gguf", zeros)])
    image = read_layout(out_dir, "latest")
    assert image.layers[0].size < 1 << 20
    dest = tmp_path / "x"
    dest.mkdir()
    with pytest.raises(OCIError, match="refused as a decompression bomb"):
        extract(image, "/model.gguf", dest / "model.gguf")
    assert list(dest.iterdir()) == []


def test_a_layer_that_cannot_fit_the_disk_is_refused_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    from collections import namedtuple

    from harness.errors import HarnessError

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1 << 30, 1 << 30, 4 << 20))
    big = tmp_path / "big"
    with big.open("wb") as out:
        out.truncate(16 << 20)
    out_dir = tmp_path / "layout"
    with pytest.raises(HarnessError, match=r"not enough disk for the layer: \d+ bytes needed, "
                       r"4194304 free in "), LayoutWriter(out_dir) as writer:  # fmt: skip
        writer.add_layer([LayerEntry("/m.gguf", big)])
    leftovers = [p for p in out_dir.rglob("*") if p.is_file() and "blobs" in p.parts]
    assert leftovers == []
