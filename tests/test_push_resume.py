"""A push stopped by a person resumes where it stopped; one killed mid-chunk starts over, saying so.

A 200 MiB layer of random bytes, pushed in 8 MiB chunks to the real registry (Debian's
docker-registry, distribution 2.8) by ``gguf-harness push`` in a subprocess whose upload
journal (``$GGUF_HARNESS_CACHE/uploads``) the test watches:

- SIGTERM (or SIGINT) once half is acknowledged: the chunk in flight ends, the journal names
  the session, the command exits 143 (130) with one line; the rerun sends only the rest. A
  second signal stops in the middle of a chunk.
- ``kill -9`` in the middle of a chunk: distribution cancels that session when asked about it
  (its data no longer matches its state token), so the rerun starts over and says so.
- A journal of another repository or host, or one that does not parse, is ignored.
- ``gguf-harness test --publish`` (pytest, as a child of the command) stops the same way.

Each image is pulled back with every digest checked, and the journal directory is empty after
each successful push.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from harness.cli._stop import Interrupted, graceful_stop
from harness.distribution import BlobSource, RegistryOptions, _transfer, pull_layout, push_layout
from harness.distribution._journal import Session, journal_path
from harness.oci import LayerEntry, read_layout
from tests.harness_cli import harness
from tests.images import write_image
from tests.services import Registry
from tests.test_interrupt import PACKERFILE, write_big_gguf

ROOT = Path(__file__).resolve().parents[1]
SIZE = 200 << 20
CHUNK = 8 << 20
HALF = SIZE // 2

pytestmark = [pytest.mark.component("registry"), pytest.mark.usefixtures("no_user_credentials")]


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("resume")
    data = work / "weights.bin"
    data.write_bytes(np.random.default_rng(15).bytes(SIZE))
    out = work / "layout"
    write_image(out, [LayerEntry("/models/weights.bin", data)])
    data.unlink()
    return out


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of the CLI runs; this process's cache is theirs too."""
    values = {k: v for k, v in os.environ.items() if not k.startswith(("GGUF_HARNESS_", "PYTEST_"))}
    values |= {
        "HOME": str(tmp_path / "home"),
        "GGUF_HARNESS_CACHE": str(tmp_path / "cache"),
        "DOCKER_CONFIG": str(tmp_path / "no-docker-config"),
        "PYTHONPATH": str(ROOT),
        "CI": "true",  # plain progress lines, not a live bar
    }
    monkeypatch.setenv("GGUF_HARNESS_CACHE", values["GGUF_HARNESS_CACHE"])
    return values


@pytest.mark.parametrize(("signame", "status"), [("TERM", 143), ("INT", 130)])
def test_a_signal_stops_between_chunks_and_the_rerun_sends_the_rest(
    layout: Path, env: dict[str, str], registry: Registry, tmp_path: Path, signame: str, status: int
) -> None:
    repository = f"resume/{signame.lower()}"
    ref = f"{registry.host}/{repository}:v1"
    argv = ["push", f"{layout}:v1", ref, "--insecure", "--chunk-size", "8MiB"]
    journals = Path(env["GGUF_HARNESS_CACHE"]) / "uploads"
    stopped = _run_until(argv, env, tmp_path, lambda: _journaled(journals) >= HALF, signame)
    assert stopped.returncode == status, stopped.stderr
    layer = read_layout(layout).layers[0]
    line = stopped.stderr.strip().splitlines()[-1]
    assert line.startswith("gguf-harness: ") and line.endswith(
        f" bytes of {layer.digest}; run again to resume"
    ), stopped.stderr
    offset = int(line.split("stopped after ", 1)[1].split()[0])
    # Stopped at a chunk boundary, and the journal names that very offset.
    assert HALF <= offset < layer.size and offset % CHUNK == 0
    assert _journaled(journals) == offset
    assert _tagged(registry, repository) is None

    started = time.monotonic()
    rerun = _cli(argv, env, tmp_path)
    seconds = time.monotonic() - started
    assert f"resuming {layer.digest[:19]} at {offset} of {layer.size} bytes" in rerun.stderr
    sent = int(rerun.stdout.rsplit(", ", 1)[1].split()[0])
    # Only the rest of the layer: the config went up whole before the stop.
    assert sent == layer.size - offset, f"{sent} bytes sent again ({seconds:.1f} s)"
    _pulled_whole(ref, layout, tmp_path)
    assert list(journals.iterdir()) == []


def test_kill_9_mid_chunk_starts_over_and_says_so(
    layout: Path, env: dict[str, str], registry: Registry, tmp_path: Path
) -> None:
    ref = f"{registry.host}/resume/killed:v1"
    argv = ["push", f"{layout}:v1", ref, "--insecure", "--chunk-size", "8MiB"]
    journals = Path(env["GGUF_HARNESS_CACHE"]) / "uploads"
    uploads = registry.root / "docker/registry/v2/repositories/resume/killed/_uploads"

    def mid_chunk() -> bool:
        acknowledged = _journaled(journals)
        received = max((p.stat().st_size for p in uploads.glob("*/data")), default=0)
        return acknowledged >= HALF and received >= acknowledged + (2 << 20)

    killed = _run_until(argv, env, tmp_path, mid_chunk, "KILL")
    assert killed.returncode == -signal.SIGKILL
    acknowledged = _journaled(journals)
    assert acknowledged >= HALF  # the journal still names the last acknowledged session

    rerun = _cli(argv, env, tmp_path)
    layer = read_layout(layout).layers[0]
    refused = (
        f"the registry no longer has the upload of {layer.digest[:19]} an earlier run left at "
        f"{acknowledged} of {layer.size} bytes; starting over"
    )
    assert refused in rerun.stderr
    assert int(rerun.stdout.rsplit(", ", 1)[1].split()[0]) >= layer.size
    _pulled_whole(ref, layout, tmp_path)
    assert list(journals.iterdir()) == []


def test_a_second_signal_stops_at_once(
    layout: Path, env: dict[str, str], registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process, the CLI's handlers: the first SIGTERM would let the chunk in flight end (at
    128 MiB), the second, 0.6 s later, stops in the middle of it (the journal stays at 64 MiB)."""
    chunk = 64 << 20
    slices = _transfer._slices

    def slow(source: BlobSource, offset: int, length: int) -> Iterator[bytes]:
        for piece in slices(source, offset, length):
            time.sleep(0.02)  # 1.3 s a chunk: a person's second Ctrl-C comes within one
            yield piece

    monkeypatch.setattr(_transfer, "_slices", slow)
    journals = Path(env["GGUF_HARNESS_CACHE"]) / "uploads"

    def signals() -> None:
        while _journaled(journals) < chunk:
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.6)
        os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=signals, daemon=True)
    sender.start()
    with pytest.raises(Interrupted) as stopped, graceful_stop():
        push_layout(
            layout,
            f"{registry.host}/resume/twice:v1",
            options=RegistryOptions(insecure=True, chunk_size=chunk, transfers=1),
        )
    sender.join()
    assert stopped.value.status == 143
    assert _journaled(journals) == chunk


@pytest.mark.parametrize("kind", ["garbage", "repository", "registry"])
def test_a_journal_of_another_upload_or_garbage_is_ignored(
    layout: Path, env: dict[str, str], registry: Registry, tmp_path: Path, kind: str
) -> None:
    repository = f"resume/ignored-{kind}"
    layer = read_layout(layout).layers[0]
    path = journal_path(registry.host, repository, layer.digest)
    path.parent.mkdir(parents=True)
    if kind == "garbage":
        path.write_bytes(b'{"registry": "\x00 not json')
    else:
        # Half an upload, as far as the journal says: of another repository (whose session this
        # repository must not take over), or through another host.
        session = Session(
            registry.host,
            repository,
            layer.digest,
            layer.size,
            f"http://{registry.host}/v2/{repository}/blobs/uploads/x?_state=y",
            HALF,
        )
        if kind == "repository":
            session = Session(**{**session.__dict__, "repository": "resume/other"})
        else:
            session = Session(**{**session.__dict__, "location": "http://198.51.100.7/v2/u/x"})
        path.write_bytes(json.dumps(session.__dict__).encode())  # under this blob's name
    said: list[str] = []
    result = push_layout(
        layout,
        f"{registry.host}/{repository}:v1",
        options=RegistryOptions(insecure=True, chunk_size=CHUNK),
        report=said.append,
    )
    ignored = [line for line in said if line.startswith("ignored")]
    assert len(ignored) == 1 and str(path) in ignored[0], said
    assert result.bytes_sent >= layer.size
    _pulled_whole(f"{registry.host}/{repository}:v1", layout, tmp_path)
    assert list(path.parent.iterdir()) == []


# --- helpers -------------------------------------------------------------------------------------


def _journaled(journals: Path) -> int:
    """The offset the journal names (0 while there is none)."""
    for path in journals.glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            return int(json.loads(path.read_bytes())["offset"])
    return 0


def _run_until(
    argv: list[str], env: dict[str, str], cwd: Path, ready: Callable[[], bool], signame: str
) -> subprocess.CompletedProcess[str]:
    """Run the CLI, send it SIG``signame`` once ``ready()`` holds (it must still run then)."""
    out, err = cwd / f"out-{signame}.log", cwd / f"err-{signame}.log"
    with out.open("w") as stdout, err.open("w") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-m", "harness", *argv],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )
        deadline = time.monotonic() + 120
        while not ready() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        assert child.poll() is None, f"it ended before the signal:\n{err.read_text()}"
        child.send_signal(getattr(signal, f"SIG{signame}"))
        code = child.wait(timeout=60)
    return subprocess.CompletedProcess(argv, code, out.read_text(), err.read_text())


def _cli(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    done = harness(*argv, cwd=cwd, env=env, timeout=300)
    assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout}\n{done.stderr}"
    return done


def _tagged(registry: Registry, repository: str) -> int | None:
    status, _, _ = registry.request(f"/v2/{repository}/manifests/v1", method="HEAD")
    return None if status == 404 else status


def _pulled_whole(ref: str, layout: Path, tmp_path: Path) -> None:
    """Pull the image back (pull_layout checks every blob's size and digest): the layers of
    ``layout``, whole."""
    back = tmp_path / f"back-{time.monotonic_ns()}"
    pulled = pull_layout(ref, back, options=RegistryOptions(insecure=True))
    assert [d.digest for d in pulled.layers] == [d.digest for d in read_layout(layout).layers]
    layer = read_layout(back).layers[0]
    assert (back / "blobs" / "sha256" / layer.digest[7:]).stat().st_size == layer.size


def test_test_publish_stopped_by_sigterm_then_rerun_resumes(
    env: dict[str, str], registry: Registry, tmp_path: Path
) -> None:
    """``gguf-harness test --publish`` runs pytest as a child: SIGTERM to the command reaches
    the publish in pytest, which stops between chunks (64 MiB, the default) and exits 143."""
    project = tmp_path / "project"
    project.mkdir()
    write_big_gguf(project / "model.gguf", SIZE)
    (project / "GGUFPackerfile").write_text(PACKERFILE)
    (project / "model.yaml").write_text(
        "schemaVersion: 1\nname: big\nexpect:\n  architecture: llama\n"
    )
    env = {**env, "GGUF_HARNESS_REGISTRY": registry.host}
    argv = ["test", "--publish", "-p", "no:cacheprovider", "-q", "--harness-report", "r.json"]
    journals = Path(env["GGUF_HARNESS_CACHE"]) / "uploads"
    stopped = _run_until(argv, env, project, lambda: _journaled(journals) > 0, "TERM")
    assert stopped.returncode == 143, stopped.stdout + stopped.stderr
    assert "stopped after " in stopped.stdout and "run again to resume" in stopped.stdout
    offset = _journaled(journals)
    assert offset >= 64 << 20
    assert _tagged(registry, "big") is None

    rerun = _cli(argv, env, project)
    assert f"big: {registry.host}/big:latest sha256:" in rerun.stdout
    (item,) = json.loads((project / "r.json").read_text())["models"][0]["publish"]["items"]
    layer = read_layout(project / "out" / "big").layers[0]
    assert item["bytes_sent"] == layer.size - offset  # the rest of the layer only
    _pulled_whole(f"{registry.host}/big:latest", project / "out" / "big", tmp_path)
    assert list(journals.iterdir()) == []


def test_a_new_upload_sweeps_the_journals_of_week_old_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A push never run again leaves its journal; the registry forgets the session within a
    week (distribution's upload purging), so the next new upload removes such files."""
    from harness.distribution import _journal

    monkeypatch.setenv("GGUF_HARNESS_CACHE", str(tmp_path / "cache"))

    def session(digest: str) -> Session:
        return Session("127.0.0.1:5000", "m", digest, 10, "/v2/m/blobs/uploads/x", 5)

    old, young = session("sha256:" + "a" * 64), session("sha256:" + "b" * 64)
    for each, age_days in ((old, 8), (young, 6)):
        _journal.save(each)
        path = journal_path(each.registry, each.repository, each.digest)
        stamp = time.time() - age_days * 24 * 3600
        os.utime(path, (stamp, stamp))
    _journal.save(session("sha256:" + "c" * 64))
    names = sorted(p.name for p in (tmp_path / "cache" / "uploads").iterdir())
    assert names == sorted(
        journal_path(s.registry, s.repository, s.digest).name
        for s in (young, session("sha256:" + "c" * 64))
    )
