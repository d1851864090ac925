"""The store: list / inspect / remove with reference counting, blobs kept once, files usable in
place, and a store that stays consistent when the process is killed at any moment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.builder import BuildOptions, build
from harness.gguf import read_header
from harness.oci import LayerEntry, LayoutWriter, read_layout
from harness.store import ModelRow, Store, StoreError, store_root
from tests.gguf_files import write_model

REF = "127.0.0.1:1/tiny"


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A seed image of a tiny GGUF, built by the native builder."""
    monkeypatch.setenv("GGUF_HARNESS_CACHE", str(tmp_path / "cache"))
    context = tmp_path / "context"
    context.mkdir()
    write_model(context / "model.gguf")
    (context / "GGUFPackerfile").write_text(
        'FROM scratch\nCOPY model.gguf /models/\nCMD ["-m", "/models/model.gguf", "-c", "256"]\n'
    )
    return build(BuildOptions(context=context, output=tmp_path / "layout", tag="v1")).output


def test_store_root_from_environment(tmp_path: Path) -> None:
    assert store_root({"GGUF_HARNESS_STORE": str(tmp_path)}) == tmp_path
    assert store_root({"XDG_DATA_HOME": "/x"}) == Path("/x/gguf-harness")
    assert store_root({}).parts[-3:] == (".local", "share", "gguf-harness")


def test_list_inspect_and_files_in_place(layout: Path, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    model = store.add_layout(layout, f"{REF}:v1")
    source = layout.parent / "context" / "model.gguf"
    assert model.model_file is not None
    assert model.model_file.read_bytes() == source.read_bytes()
    assert read_header(model.model_file).tensors  # a GGUF reader opens it where it lies
    assert model.command() == ["-m", str(model.model_file), "-c", "256"]
    assert store.inspect(f"{REF}:v1") == dict(read_layout(layout).config)
    [row] = store.rows()
    assert ModelRow.COLUMNS == (
        "NAME", "TAG", "ID", "ARCH", "PARAMS", "BPW", "TYPE", "USAGE", "CREATED", "SIZE",
    )  # fmt: skip
    assert (row.name, row.tag, row.arch, row.type, row.usage) == (
        REF, "v1", "llama", "Q8_0", "text-to-text",
    )  # fmt: skip
    assert row.id == model.config_digest and row.short_id == model.id and len(row.short_id) == 12
    assert (
        row.params == "37.57 K" and row.bpw.endswith(" bpw") and row.size == source.stat().st_size
    )
    assert row.created == "1970-01-01T00:00:00Z"
    assert store.get(model.id).reference == f"{REF}:v1"  # by ID prefix too


def test_blobs_are_stored_once_and_remove_counts_references(layout: Path, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    first = store.add_layout(layout, f"{REF}:v1")
    second = store.add_layout(layout, f"{REF}:also")
    assert first.root == second.root
    assert len(list((store.root / "layers" / "sha256").iterdir())) == 1
    # Kept as blobs: manifest and config only; the layer lives unpacked, once.
    assert len(list((store.root / "blobs" / "sha256").iterdir())) == 2
    assert first.model_file is not None and first.model_file.stat().st_nlink == 2

    removed = store.remove(f"{REF}:v1")
    assert removed.references == (f"{REF}:v1",) and removed.blobs == () and removed.freed == 0
    assert second.model_file is not None and second.model_file.read_bytes()  # still whole
    assert [row.tag for row in store.rows()] == ["also"]

    size = second.model_file.stat().st_size
    removed = store.remove(second.id[:6])
    assert removed.references == (f"{REF}:also",)
    assert removed.freed >= size
    for part in ("blobs/sha256", "layers/sha256", "models"):
        assert list((store.root / part).iterdir()) == []
    assert store.rows() == []


def test_remove_errors(layout: Path, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    store.add_layout(layout, f"{REF}:v1")
    with pytest.raises(StoreError, match="no model"):
        store.remove("127.0.0.1:1/other:v1")
    with pytest.raises(StoreError, match="no model"):
        store.remove("ab")  # too short to be an ID prefix
    assert len(store.rows()) == 1


_CHILD = """
import sys
from harness.store import Store
Store(sys.argv[1]).add_layout(sys.argv[2], sys.argv[3])
"""


def _big_layout(path: Path) -> Path:
    with LayoutWriter(path) as writer:
        layers = [
            writer.add_layer([LayerEntry(f"/m/part{i}.gguf", os.urandom(6 << 20))], "gzip")
            for i in range(3)
        ]
        config = {
            "architecture": "amd64",
            "config": {"Cmd": ["-m", "/m/part0.gguf"]},
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        }
        writer.tag(writer.add_image(config, layers), "v1")
    return path


def test_killed_at_any_moment_the_store_stays_consistent(tmp_path: Path) -> None:
    layout = _big_layout(tmp_path / "big")
    store = Store(tmp_path / "store")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    kills = 0
    for attempt, delay in enumerate((0.0, 0.02, 0.05, 0.1, 0.2, 0.4)):
        name = f"{REF}:k{attempt}"
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(store.root), str(layout), name], env=env
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and child.poll() is None:
            staging = store.root / "tmp"
            if staging.is_dir() and any(
                p.name.startswith(f"{child.pid}-") for p in staging.iterdir()
            ):
                break  # the child has started writing
            time.sleep(0.005)
        time.sleep(delay)
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            kills += 1
        child.wait(30)
        _check_consistent(store, layout)
    assert kills >= 3  # most attempts were cut short somewhere in the middle
    store.collect()
    live = {digest[7:] for digest in store.references().values()}
    assert {p.name for p in (store.root / "models").iterdir()} == live
    assert list((store.root / "tmp").iterdir()) == []
    # And a pull that is allowed to finish works on top of whatever the kills left.
    store.add_layout(layout, f"{REF}:done")
    _check_consistent(store, layout)


def _check_consistent(store: Store, layout: Path) -> None:
    """Every reference the store lists opens, with every file whole."""
    image = read_layout(layout)
    for row in store.rows():
        model = store.get(row.reference)
        assert model.manifest_digest == image.descriptor.digest
        for i in range(3):
            assert model.path(f"/m/part{i}.gguf").stat().st_size == 6 << 20
