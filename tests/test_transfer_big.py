"""A pull of a ~200 MB model writes its bytes once and reads nothing back; push and pull show
progress lines in CI logs (bytes and rate) and nothing when quiet; a blob streamed while it
downloads survives a fetch that starts over and stops when its reader goes away.

The figures at 4 GB, against skopeo and ``sha256sum`` + ``cp``, are benchmarks/push_pull.py's.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from harness import _progress
from harness.cli import main
from harness.distribution import DigestError, RegistryOptions, open_blob, pull_layout, push_layout
from harness.oci import Descriptor, LayerEntry, LayoutWriter
from harness.store import Store
from tests.services import Registry

SIZE = 200 << 20
OPTIONS = RegistryOptions(insecure=True)
ROOT = Path(__file__).resolve().parents[1]
MODEL = "models/model.gguf"


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    work = tmp_path_factory.mktemp("big-transfer")
    model = work / "model.gguf"
    with open(model, "wb") as out:
        out.write(b"GGUF" + (3).to_bytes(4, "little"))
        for _ in range(SIZE >> 20):
            out.write(os.urandom(1 << 20))
    with LayoutWriter(work / "layout") as writer:
        layer = writer.add_layer([LayerEntry(f"/{MODEL}", model)], "none")
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["-m", f"/{MODEL}"]},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        }
        writer.tag(writer.add_image(config, [layer]), "v1")
    model.unlink()
    yield work / "layout"


@pytest.fixture
def quiet_after() -> Iterator[None]:
    yield
    _progress.configure(quiet=False, interval=5.0, min_total=32 << 20)


def _io() -> dict[str, int]:
    """This process's bytes through read() and write() calls, every thread (and socket) counted."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return {"read": int(fields["rchar"]), "written": int(fields["wchar"])}


@pytest.mark.component("registry")
@pytest.mark.usefixtures("no_user_credentials")
def test_a_pull_writes_the_model_once_and_reads_nothing_back(
    layout: Path, registry: Registry, tmp_path: Path
) -> None:
    ref = f"{registry.host}/big/once:v1"
    push_layout(layout, ref, options=OPTIONS)
    store = Store(tmp_path / "store")
    before = _io()
    model = store.pull(ref, options=OPTIONS)
    after = _io()
    # The layer is unpacked as it arrives: one write of the model, one read (from the socket).
    # The old way wrote a download, read it back and wrote the files: twice each.
    assert after["written"] - before["written"] < SIZE * 1.1
    assert after["read"] - before["read"] < SIZE * 1.1
    # One copy on disk, usable in place: the model directory's GGUF is the layer's file.
    big = {
        p.stat().st_ino
        for p in store.root.rglob("*")
        if p.is_file() and p.stat().st_size > SIZE // 2
    }
    assert len(big) == 1
    gguf = model.root / MODEL
    assert gguf.stat().st_ino in big
    with open(gguf, "rb") as file:
        assert file.read(4) == b"GGUF"
    assert not list((store.root / "tmp").iterdir())


@pytest.mark.component("registry")
@pytest.mark.usefixtures("no_user_credentials", "quiet_after")
def test_push_and_pull_show_progress_lines_in_ci_logs_and_nothing_when_quiet(
    layout: Path,
    registry: Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CI", "true")
    _progress.configure(interval=0.0)  # a line on every piece: several lines for 200 MB
    push_layout(layout, f"{registry.host}/big/progress:v1", options=OPTIONS)
    pull_layout(f"{registry.host}/big/progress:v1", tmp_path / "pulled", options=OPTIONS)
    err = capfd.readouterr().err
    for verb in ("push", "pull"):
        going = re.findall(
            rf"^gguf-harness: {verb} [0-9a-f]{{12}}: [\d.]+ [KMG]?i?B of 200\.\d\d MiB \(\d+%\), "
            r"[\d.]+ [KMG]?i?B/s, ETA \d+ s$",
            err,
            re.M,
        )
        done = re.findall(
            rf"^gguf-harness: {verb} [0-9a-f]{{12}}: 200\.\d\d MiB in [\d.]+ s, "
            r"[\d.]+ [KMG]?i?B/s$",
            err,
            re.M,
        )
        assert len(going) >= 2 and len(done) == 1, err
    assert "config" not in err and err.count("\n") < 10_000  # small blobs show nothing

    # The CLI's --quiet: not a line on stderr, for a push or for a pull into the store.
    monkeypatch.setenv("GGUF_HARNESS_STORE", str(tmp_path / "store"))
    ref = f"{registry.host}/big/quiet:v1"
    assert main(["push", str(layout), ref, "--insecure", "--quiet"]) == 0
    assert main(["pull", ref, "--insecure", "-q"]) == 0
    out, err = capfd.readouterr()
    assert err == "" and out.count("\n") == 2


def test_a_terminal_gets_a_live_bar(monkeypatch: pytest.MonkeyPatch, quiet_after: None) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(sys, "stderr", screen)
    with _progress.progress("pull 0123456789ab", total=64 << 20) as bar:
        bar.advance(32 << 20)
    assert "pull 0123456789ab" in screen.getvalue() and "MB" in screen.getvalue()


def test_help_does_not_import_rich() -> None:
    code = (
        "import sys\nfrom harness.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n"
        "    pass\nprint('rich' in sys.modules, 'harness._progress' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.stdout.split()[-2:] == ["False", "False"], done.stdout + done.stderr


class _Source:
    """An ImageSource whose fetch writes the blob as told: a start over from byte 0 after
    ``restart_after`` bytes (a registry that ignored a Range request), or an error at the end."""

    name = "test"

    def __init__(self, data: bytes, restart_after: int = 0, fail: bool = False) -> None:
        self.data, self.restart_after, self.fail = data, restart_after, fail
        self.stopped = threading.Event()

    def image(self) -> object:
        raise NotImplementedError

    def local(self, descriptor: Descriptor) -> Path | None:
        return None

    def fetch(self, descriptor: Descriptor, out: BinaryIO, prefix: object = None) -> None:
        start = out.tell()
        try:
            if self.restart_after:
                out.write(self.data[: self.restart_after])
                out.seek(start)
                out.truncate()
            for offset in range(0, len(self.data), 1000):
                out.write(self.data[offset : offset + 1000])
        finally:
            self.stopped.set()
        if self.fail:
            raise DigestError("blob content does not match its descriptor", "test")


def _descriptor(data: bytes) -> Descriptor:
    return Descriptor(
        "application/octet-stream", "sha256:" + hashlib.sha256(data).hexdigest(), len(data)
    )


def test_a_blob_stream_follows_a_fetch_that_starts_over() -> None:
    data = os.urandom(100_000)
    with open_blob(_Source(data, restart_after=2500), _descriptor(data)) as stream:  # type: ignore[arg-type]
        got = stream.read()
    assert got == data


def test_a_blob_stream_raises_the_fetch_error_at_its_end() -> None:
    data = os.urandom(10_000)
    source = _Source(data, fail=True)
    with open_blob(source, _descriptor(data)) as stream, pytest.raises(DigestError):  # type: ignore[arg-type]
        stream.read()


def test_a_blob_stream_left_early_stops_its_fetch() -> None:
    data = os.urandom(10 << 20)  # far more than the queue holds
    source = _Source(data)
    with pytest.raises(RuntimeError), open_blob(source, _descriptor(data)) as stream:  # type: ignore[arg-type]
        stream.read(1000)
        raise RuntimeError("the unpacker refused the layer")
    assert source.stopped.wait(5)


def test_when_one_of_several_transfers_fails_the_others_stop_before_it_is_raised() -> None:
    from harness.distribution import each
    from harness.distribution._parallel import stop_point

    started: list[str] = []
    ended: list[str] = []

    def work(name: str) -> str:
        started.append(name)
        try:
            if name == "bad":
                raise DigestError("blob content does not match its descriptor", "test")
            for _ in range(10_000):  # a long blob, piece by piece
                stop_point()
                threading.Event().wait(0.001)
            return name
        finally:
            ended.append(name)

    began = time.monotonic()
    with pytest.raises(DigestError):
        each(["long", "bad", "other", "more"], work, 3, "test")
    assert sorted(ended) == sorted(started)  # none still running when it raised
    assert time.monotonic() - began < 5  # the long ones stopped (alone: 10 s or more)
    assert each(["a", "b"], str.upper, 4, "test") == ["A", "B"]


def test_a_layer_stream_that_answers_short_reads_unpacks_whole(tmp_path: Path) -> None:
    """A decompressor may return fewer bytes than asked (zstd does); the unpacker reads from
    the stream directly, so it must fill tarfile's header reads itself."""
    from harness.store._unpack import UnpackLimits, unpack_layer

    files = {f"models/part-{n}.bin": os.urandom(1000 + 333 * n) for n in range(5)}
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    blob = raw.getvalue()

    class Dribble:
        def __init__(self) -> None:
            self.source = io.BytesIO(blob)

        def read(self, size: int = -1, /) -> bytes:
            return self.source.read(min(size, 100) if size >= 0 else 100)

    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    descriptor = Descriptor("application/vnd.oci.image.layer.v1.tar", digest, len(blob))
    index = unpack_layer(Dribble(), descriptor, digest, tmp_path / "layer", UnpackLimits())
    assert index.diff_id == digest
    for name, data in files.items():
        assert (tmp_path / "layer" / "fs" / name).read_bytes() == data
