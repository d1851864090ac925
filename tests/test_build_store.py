"""The builder's content store: digests well-formed, files kept once, stale digests never used."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest

from harness.builder._store import ContentStore

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def test_adopt_moves_a_file_in_under_its_digest(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    out = store.scratch() / "out.gguf"
    out.write_bytes(b"weights")
    digest = store.adopt(out)
    # Regression: adopt once returned "sha256:sha256:...", which broke layouts built from it.
    assert DIGEST.match(digest), digest
    assert digest == "sha256:" + hashlib.sha256(b"weights").hexdigest()
    assert store.path(digest).read_bytes() == b"weights"
    assert not out.exists()


def test_every_way_in_gives_the_same_digest(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    source = tmp_path / "a.txt"
    source.write_bytes(b"same")
    tmp = store.scratch() / "b"
    tmp.write_bytes(b"same")
    assert store.put_file(source) == store.put_bytes(b"same") == store.adopt(tmp)


def test_a_changed_file_is_hashed_again(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    source = tmp_path / "model.gguf"
    source.write_bytes(b"one")
    first = store.digest_of(source)
    source.write_bytes(b"two")
    os.utime(source, ns=(1, 1))  # even a file whose mtime goes backwards
    second = store.digest_of(source)
    assert first != second
    assert second == "sha256:" + hashlib.sha256(b"two").hexdigest()


def test_remembered_digests_survive_a_new_process(tmp_path: Path) -> None:
    source = tmp_path / "model.gguf"
    source.write_bytes(b"x" * 100)
    store = ContentStore(tmp_path / "store")
    digest = store.digest_of(source)
    store.save()
    again = ContentStore(tmp_path / "store")
    assert again.digest_of(source) == digest


def test_one_cache_root_for_every_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from harness._fs import cache_root
    from harness.toolchain import cache_dir

    monkeypatch.delenv("GGUF_HARNESS_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == cache_dir() == tmp_path / "xdg" / "gguf-harness"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == cache_dir() == tmp_path / "home" / ".cache" / "gguf-harness"
    monkeypatch.setenv("GGUF_HARNESS_CACHE", str(tmp_path / "mine"))
    assert cache_root() == cache_dir() == tmp_path / "mine"
