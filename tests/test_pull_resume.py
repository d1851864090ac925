"""A pull killed half way (``kill -9``) fetches only what it lacks when rerun: the store's pull
(an uncompressed tar layer, unpacked as it downloads) and ``pull_layout`` (an OCI layout). The
registry's access log says what each rerun asked for: a 206 answer of well under the blob's
size. A staged part changed behind the pull's back still ends in the right model (fetched again
from byte 0), a gzip layer still completes (from byte 0), and nothing is left behind.

The figures at 1 GB and 4 GB (the rerun's bytes and time vs a full pull) are
benchmarks/push_pull.py ``--kill``'s.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import pytest

from harness._fs import try_lock
from harness.distribution import (
    LayoutImageSource,
    Prefix,
    RegistryError,
    RegistryOptions,
    pull_layout,
    push_layout,
)
from harness.distribution._source import copy_verified
from harness.oci import OCI_LAYER, Descriptor, Layer, LayerEntry, LayoutWriter, read_layout
from harness.store import Store, _resume
from tests.harness_cli import harness
from tests.images import write_image
from tests.services import Registry
from tests.test_interrupt import write_big_gguf
from tests.throttle import ThrottledProxy

ROOT = Path(__file__).resolve().parents[1]
SIZE = 200 << 20
MODEL = "/models/model.gguf"
OPTIONS = RegistryOptions(insecure=True)


@dataclass(frozen=True)
class Image:
    layout: Path
    sha256: str  # of the GGUF
    blob: str  # the layer's digest
    size: int  # the layer's size


def _image(work: Path, compression: str, size: int) -> Image:
    model = work / "model.gguf"
    write_big_gguf(model, size)
    layout = work / f"layout-{compression}"
    (layer,) = write_image(
        layout, [LayerEntry(MODEL, model)], compression=compression, cmd=["-m", MODEL]
    )
    sha = _sha256(model)
    model.unlink()
    return Image(layout, sha, layer.descriptor.digest, layer.descriptor.size)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    work = tmp_path_factory.mktemp("resume")
    yield _image(work, "none", SIZE)
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GGUF_HARNESS_", "PYTEST_"))}
    return base | {
        "HOME": str(tmp_path / "home"),
        "GGUF_HARNESS_CACHE": str(tmp_path / "cache"),
        "GGUF_HARNESS_STORE": str(tmp_path / "store"),
        "DOCKER_CONFIG": str(tmp_path / "no-docker-config"),
        "PYTHONPATH": str(ROOT),
    }


# --- the store's pull ----------------------------------------------------------------------------


@pytest.mark.component("registry")
@pytest.mark.usefixtures("no_user_credentials")
def test_a_killed_store_pull_resumes_where_it_stopped(
    plain: Image, registry: Registry, env: dict[str, str]
) -> None:
    ref, tmp, offset, mark = _store_pull_killed_half_way(plain, registry, env, "resume/store")
    _pull_ok(ref, env, plain)
    gets = _blob_gets(registry, mark, plain.blob)
    # Range requests from where the journal stopped: the rest of the blob, no more.
    assert {status for status, _ in gets} == {206}, gets
    assert sum(size for _, size in gets) == plain.size - offset, gets
    assert list(tmp.iterdir()) == []


@pytest.mark.component("registry")
@pytest.mark.usefixtures("no_user_credentials")
def test_a_changed_staged_file_ends_in_the_right_model(
    plain: Image, registry: Registry, env: dict[str, str]
) -> None:
    ref, tmp, offset, mark = _store_pull_killed_half_way(
        plain, registry, env, "resume/store-changed"
    )
    (staged,) = tmp.glob(f"resume-*/layer/fs{MODEL}")
    _flip_byte(staged, 1 << 20)
    done = _pull_ok(ref, env, plain)
    assert "again from 0" in done.stderr
    gets = _blob_gets(registry, mark, plain.blob)
    # The rest from the journal's offset, which the digest refuses; then all of it from 0.
    assert {status for status, _ in gets} == {206}, gets
    assert sum(size for _, size in gets) == plain.size - offset + plain.size, gets
    assert list(tmp.iterdir()) == []


@pytest.mark.component("registry")
@pytest.mark.usefixtures("no_user_credentials")
def test_a_killed_gzip_layer_pull_completes_from_the_start(
    registry: Registry, env: dict[str, str], tmp_path: Path
) -> None:
    # A compressed layer starts over (docs/security.md): 64 MiB keeps gzip's cost small.
    image = _image(tmp_path, "gzip", 64 << 20)
    ref = _pushed(image, registry, "resume/gzip")
    tmp = Path(env["GGUF_HARNESS_STORE"]) / "tmp"
    _kill_when(["pull", ref, "--insecure"], env, lambda: _largest(tmp, f"*/layer-*/fs{MODEL}") > 0)
    _pull_ok(ref, env, image)
    assert list(tmp.iterdir()) == []


# --- an OCI layout -------------------------------------------------------------------------------


@pytest.mark.component("registry")
@pytest.mark.usefixtures("no_user_credentials")
def test_a_killed_layout_pull_resumes_where_it_stopped(
    plain: Image, registry: Registry, env: dict[str, str], tmp_path: Path
) -> None:
    ref = _pushed(plain, registry, "resume/layout")
    dest = tmp_path / "out" / "pulled"
    partial = dest.parent / f".pulled.part-{plain.blob[7:]}"
    argv = _layout_pull(ref, dest)
    before = registry.log.stat().st_size
    with _slow(ref, registry) as (slow, proxy):
        _kill_when(
            _layout_pull(slow, dest), env, lambda: _size(partial) >= plain.size // 2, module=False
        )
        have = _size(partial)
        mark = _settled(registry, before, plain.blob, proxy)
    _run_ok(argv, env, module=False)
    gets = _blob_gets(registry, mark, plain.blob)
    assert {status for status, _ in gets} == {206}, gets
    assert sum(size for _, size in gets) == plain.size - have, gets
    _check_layout(dest, plain)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["pulled"]

    # A partial changed behind the pull's back: the digest says so, and it is fetched from 0.
    shutil.rmtree(dest)
    before = registry.log.stat().st_size
    with _slow(ref, registry) as (slow, proxy):
        _kill_when(
            _layout_pull(slow, dest), env, lambda: _size(partial) >= plain.size // 2, module=False
        )
        have = _size(partial)
        mark = _settled(registry, before, plain.blob, proxy)
    _flip_byte(partial, 4096)
    _run_ok(argv, env, module=False)
    gets = _blob_gets(registry, mark, plain.blob)
    assert {status for status, _ in gets} == {206}, gets
    assert sum(size for _, size in gets) == plain.size - have + plain.size, gets
    _check_layout(dest, plain)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["pulled"]


# --- a layer of many members, in process ------------------------------------------------------


class _Breaks(LayoutImageSource):
    """A layout read as a registry is (no local file: streamed), whose first fetch breaks off
    after ``after`` bytes, as a network that is gone; records where each fetch started."""

    def __init__(self, layout: Path, after: int) -> None:
        super().__init__(layout, "v1")
        self.blobs = layout / "blobs" / "sha256"
        self.after, self.starts = after, list[int]()

    def local(self, descriptor: Descriptor) -> Path | None:
        return None

    def fetch(self, descriptor: Descriptor, out: BinaryIO, prefix: Prefix | None = None) -> None:
        path = self.blobs / descriptor.digest[7:]
        if descriptor.media_type != OCI_LAYER:
            return copy_verified(path, descriptor, out, "test", prefix)
        self.starts.append(prefix.size if prefix else 0)
        source = self

        class _Cut(io.RawIOBase):
            def write(self, data: Any) -> int:
                if source.after and out.tell() + len(data) > source.after:
                    source.after = 0
                    raise RegistryError("connection reset", "test")
                return out.write(data)

        return copy_verified(path, descriptor, cast(BinaryIO, _Cut()), "test", prefix)


@pytest.mark.parametrize("change", [None, "journal of another digest", "shorter", "edited"])
def test_a_layer_of_many_members_resumes_to_the_same_files(
    change: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_resume, "_EVERY", 256 << 10)  # a checkpoint every 256 KiB
    rng = random.Random(0)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_member("models", tarfile.DIRTYPE))
        for number, size in enumerate((1000, 3 << 20, 0, 70_000, 5 << 20, 12)):
            name = f"models/{'long-' * 40 if number == 3 else ''}part-{number}.bin"
            data = rng.randbytes(size)
            tar.addfile(_member(name, tarfile.REGTYPE, size), io.BytesIO(data))
        tar.addfile(_member("models/link", tarfile.SYMTYPE, target="part-1.bin"))
        tar.addfile(_member("models/same", tarfile.LNKTYPE, target="models/part-4.bin"))
    blob = buffer.getvalue()
    layout = tmp_path / "layout"
    with LayoutWriter(layout) as writer:
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        layer = Layer(writer.add_blob(blob, OCI_LAYER), digest, len(blob))
        config = {"os": "linux", "architecture": "amd64", "rootfs": {"diff_ids": [digest]}}
        writer.tag(writer.add_image(config, [layer]), "v1")
    broken = _Breaks(layout, 6 << 20)  # inside part-4.bin
    store = Store(tmp_path / "store")
    with pytest.raises(RegistryError, match="connection reset"):
        store.add(broken, "resumed:v1")
    (spot,) = (tmp_path / "store" / "tmp").glob("resume-*[0-9a-f]")
    if change == "journal of another digest":
        journal = spot / "journal"
        journal.write_text(journal.read_text().replace(digest[7:], "0" * 64, 1))
    elif change == "shorter":
        os.truncate(spot / "layer/fs/models/part-4.bin", 100)
    elif change == "edited":
        _flip_byte(spot / "layer/fs/models/part-1.bin", 5)
    resumed = store.add(broken, "resumed:v1")
    # Where each fetch started: a journal that does not hold is not resumed; an edited file
    # is resumed, found wrong by the digest at the end, and the layer fetched from 0.
    resumed_at = broken.starts[1]
    assert (5 << 20 < resumed_at < 6 << 20) == (change in (None, "edited"))
    expected = {None: [0, resumed_at], "edited": [0, resumed_at, 0]}.get(change, [0, 0])
    assert broken.starts == expected
    fresh = Store(tmp_path / "fresh").add(LayoutImageSource(layout, "v1"), "fresh:v1")
    for path in ("models/part-1.bin", "models/same", "models/part-5.bin", "models/link"):
        assert resumed.path(path).read_bytes() == fresh.path(path).read_bytes()
    long_name = f"models/{'long-' * 40}part-3.bin"
    assert resumed.path(long_name).read_bytes() == fresh.path(long_name).read_bytes()
    assert list((tmp_path / "store" / "tmp").iterdir()) == []


def _member(name: str, kind: bytes, size: int = 0, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname, info.mode = kind, size, target, 0o644
    return info


# --- two pulls at once ---------------------------------------------------------------------------


@pytest.mark.component("registry")
@pytest.mark.usefixtures("no_user_credentials")
def test_a_partial_held_by_another_pull_is_not_shared_and_stale_ones_are_swept(
    registry: Registry, tmp_path: Path
) -> None:
    image = _image(tmp_path, "none", 8 << 20)
    ref = _pushed(image, registry, "resume/shared")
    hexdigest = image.blob[7:]
    # Another pull of the same layout holds the blob's partial (what it holds is its own).
    out = tmp_path / "out"
    out.mkdir()
    held = out / f".pulled.part-{hexdigest}"
    lock = try_lock(held)
    assert lock is not None
    os.write(lock, b"not this pull's")
    (out / f".pulled.part-{'0' * 64}").write_bytes(b"a blob no pull asks for")  # swept
    try:
        pull_layout(ref, out / "pulled", options=OPTIONS)
        _check_layout(out / "pulled", image)
        assert held.read_bytes() == b"not this pull's"
        assert sorted(p.name for p in out.iterdir()) == [held.name, "pulled"]
    finally:
        os.close(lock)
    # Another pull into the store holds the layer's resumable staging: this one stages its own.
    store = tmp_path / "store"
    (store / "tmp").mkdir(parents=True)
    held = store / "tmp" / f"resume-{hexdigest}.lock"
    stale = store / "tmp" / f"resume-{'0' * 64}"  # a killed pull's layer no pull asks for
    (stale / "layer").mkdir(parents=True)
    stale.with_name(stale.name + ".lock").touch()
    lock = try_lock(held)
    assert lock is not None
    try:
        model = Store(store).pull(ref, options=OPTIONS)
        assert _sha256(model.path(MODEL)) == image.sha256
        assert [p.name for p in (store / "tmp").iterdir()] == [held.name]
    finally:
        os.close(lock)


# --- helpers -------------------------------------------------------------------------------------


def _pushed(image: Image, registry: Registry, repository: str) -> str:
    ref = f"{registry.host}/{repository}:v1"
    push_layout(image.layout, ref, options=OPTIONS)
    return ref


def _layout_pull(ref: str, dest: Path) -> list[str]:
    code = (
        "import sys; from harness.distribution import RegistryOptions, pull_layout; "
        "pull_layout(sys.argv[1], sys.argv[2], options=RegistryOptions(insecure=True), "
        "report=lambda m: print(m, file=sys.stderr))"
    )
    return ["-c", code, ref, str(dest)]


def _command(argv: list[str], module: bool) -> list[str]:
    return [sys.executable, *(["-m", "harness"] if module else []), *argv]


def _kill_when(
    argv: list[str], env: dict[str, str], ready: Callable[[], bool], *, module: bool = True
) -> None:
    """Run the pull and SIGKILL it (its whole group) as soon as ``ready()`` holds."""
    child = subprocess.Popen(
        _command(argv, module), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    try:
        while not ready() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        _, err = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL, err.decode(errors="replace")[-3000:]


def _run_ok(
    argv: list[str], env: dict[str, str], *, module: bool = True
) -> subprocess.CompletedProcess[str]:
    if module:
        done = harness(*argv, env=env, timeout=300)
    else:
        done = subprocess.run(
            _command(argv, module), env=env, capture_output=True, text=True, timeout=300
        )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _pull_ok(ref: str, env: dict[str, str], image: Image) -> subprocess.CompletedProcess[str]:
    done = _run_ok(["pull", ref, "--insecure"], env)
    gguf = Store(env["GGUF_HARNESS_STORE"]).get(ref).path(MODEL)
    assert _sha256(gguf) == image.sha256
    shown = harness("inspect", str(gguf), env=env)  # usable as the store left it
    assert shown.returncode == 0 and "llama" in shown.stdout, shown.stdout + shown.stderr
    return done


def _check_layout(dest: Path, image: Image) -> None:
    for blob in (dest / "blobs" / "sha256").iterdir():
        assert _sha256(blob) == f"sha256:{blob.name}", f"{blob} is not whole"
    assert [d.digest for d in read_layout(dest, "v1").layers] == [image.blob]


def _store_pull_killed_half_way(
    image: Image, registry: Registry, env: dict[str, str], repository: str
) -> tuple[str, Path, int, int]:
    """Push ``image``, pull it into the store through a slow proxy and SIGKILL the pull once
    its journal passed half: (the reference, the store's tmp/, the journal's offset, the
    registry log's mark after every GET of the killed pull)."""
    ref = _pushed(image, registry, repository)
    tmp = Path(env["GGUF_HARNESS_STORE"]) / "tmp"
    before = registry.log.stat().st_size
    with _slow(ref, registry) as (slow, proxy):
        _kill_when(["pull", slow, "--insecure"], env, lambda: _journaled(tmp) >= image.size // 2)
        offset = _journaled(tmp)
        mark = _settled(registry, before, image.blob, proxy)
    assert image.size // 2 <= offset < image.size
    return ref, tmp, offset, mark


@contextlib.contextmanager
def _slow(ref: str, registry: Registry) -> Iterator[tuple[str, ThrottledProxy]]:
    """``ref`` through a proxy at 20 MB/s a connection: the kill lands half way on any
    machine, not after the pull is already over."""
    with ThrottledProxy(registry.host, 20e6) as proxy:
        yield ref.replace(registry.host, proxy.host, 1), proxy


def _settled(registry: Registry, before: int, digest: str, proxy: ThrottledProxy) -> int:
    """Where the registry's log stands once it recorded every GET of the killed pull (one
    per Range stream; it logs a request when it ends, which the kill makes a moment later)."""
    deadline = time.monotonic() + 30
    while (
        proxy.active or not _blob_gets(registry, before, digest)
    ) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _blob_gets(registry, before, digest), "the killed pull's GETs were never logged"
    size = -1
    while size != registry.log.stat().st_size and time.monotonic() < deadline:
        size = registry.log.stat().st_size
        time.sleep(0.3)
    return size


def _blob_gets(registry: Registry, mark: int, digest: str) -> list[tuple[int, int]]:
    """(status, bytes written) of each GET of the blob in the registry's access log since
    ``mark`` (gorilla's combined log format: ``"GET PATH HTTP/1.1" STATUS BYTES``)."""
    with open(registry.log, "rb") as log:
        log.seek(mark)
        text = log.read().decode(errors="replace")
    found = re.findall(rf'"GET /v2/[^ ]*/blobs/{re.escape(digest)} HTTP/[0-9.]+" (\d+) (\d+)', text)
    return [(int(status), int(size)) for status, size in found]


def _journaled(tmp: Path) -> int:
    """The blob offset the store's journal of a resumable layer has reached (0: none)."""
    offset = 0
    for journal in tmp.glob("resume-*/journal"):
        with contextlib.suppress(OSError):
            for line in journal.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    offset = max(offset, json.loads(line).get("offset", 0))
    return offset


def _largest(root: Path, pattern: str) -> int:
    return max((_size(p) for p in root.glob(pattern)), default=0)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _flip_byte(path: Path, offset: int) -> None:
    os.chmod(path, 0o600)
    with open(path, "r+b") as file:
        file.seek(offset)
        byte = file.read(1)
        file.seek(offset)
        file.write(bytes([byte[0] ^ 0xFF]))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"
