"""``kill -9`` in the middle of ``build``, ``push``, ``pull`` and ``test --publish`` with a 200 MiB
model, at points chosen by watching the disk: a staging file, a registry upload or an extracted
file that has reached a given size. After each kill, what a user sees is either the old state or
the new one, whole (``gguf-harness list`` never shows a partial model, no half layout sits at an
output path, no tag names a half-pushed image), and a rerun completes with the right sha256 and
sweeps what the killed run left behind.

The CLI runs as a subprocess in its own session, so that the kill reaches ``test``'s pytest child
too; HOME, the cache and the store point into the test's temp directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import pytest

from harness.builder import BuildOptions, build
from harness.cli import main
from harness.distribution import RegistryClient, RegistryOptions, push_layout
from harness.oci import Image, read_layout
from harness.store import Store
from tests.services import Registry

ROOT = Path(__file__).resolve().parents[1]
SIZE = 200 << 20
KILL_AT = 64 << 20  # bytes a watched file reaches before the kill: well inside the model
PACKERFILE = 'FROM scratch\nCOPY model.gguf /models/\nCMD ["-m", "/models/model.gguf"]\n'
MODEL_FILE = "/models/model.gguf"


@dataclass(frozen=True)
class Big:
    gguf: Path
    sha256: str
    context: Path  # the GGUF and a GGUFPackerfile
    layout: Path  # built with zstd (gzip of 200 MiB of random bytes takes 6 s on 2 cores)
    manifest: str


def write_big_gguf(path: Path, size: int) -> None:
    """A llama GGUF of about ``size`` bytes whose one tensor is random Q8_0 blocks: nothing
    compresses it, so every layer and upload carries the whole size."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("Interrupted Llama")
    writer.add_context_length(256)
    writer.add_embedding_length(4096)
    writer.add_block_count(1)
    writer.add_head_count(32)
    writer.add_head_count_kv(8)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_Q8_0))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(64)])
    row = 4096 // 32 * 34  # one row of 4096 Q8_0 weights
    rows = size // row
    data = np.random.default_rng(0).bytes(rows * row)
    tensor = np.frombuffer(data, dtype=np.uint8).reshape(rows, row)
    writer.add_tensor("token_embd.weight", tensor, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Big]:
    work = tmp_path_factory.mktemp("interrupt")
    context = work / "context"
    context.mkdir()
    write_big_gguf(context / "model.gguf", SIZE)
    (context / "GGUFPackerfile").write_text(PACKERFILE)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GGUF_HARNESS_CACHE", str(work / "cache"))
        options = BuildOptions(context, work / "layout", tag="v1", compression="zstd")
        built = build(options)
    yield Big(
        context / "model.gguf",
        _sha256(context / "model.gguf"),
        context,
        built.output,
        built.manifest.digest,
    )
    shutil.rmtree(work, ignore_errors=True)  # a gigabyte: not kept for pytest's last 3 runs


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of every CLI run of a test (and of its in-process ``list``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GGUF_HARNESS_", "PYTEST_"))}
    env |= {
        "HOME": str(tmp_path / "home"),
        "GGUF_HARNESS_CACHE": str(tmp_path / "cache"),
        "GGUF_HARNESS_STORE": str(tmp_path / "store"),
        "DOCKER_CONFIG": str(tmp_path / "no-docker-config"),
        "PYTHONPATH": str(ROOT),
    }
    for name in ("HOME", "GGUF_HARNESS_CACHE", "GGUF_HARNESS_STORE"):
        monkeypatch.setenv(name, env[name])
    return env


def test_build_killed_while_writing_its_layer_then_rerun(
    big: Big, home: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out" / "big"
    argv = ["build", str(big.context), "--tag", "big:v1", "--compression", "zstd", "-o", str(out)]
    scratch = Path(home["GGUF_HARNESS_CACHE"]) / "build" / "tmp"
    kill_when(argv, home, tmp_path, lambda: _reached(scratch, "*/layer", KILL_AT))
    assert not out.exists()  # no half layout where a later step (or skopeo) would take it
    # Killed again once the layer is in the cache, while the layout is written: either no
    # layout or a whole one.
    records = Path(home["GGUF_HARNESS_CACHE"]) / "build" / "layers"
    kill_when(argv, home, tmp_path, lambda: any(records.glob("*.json")), allow_finish=True)
    assert not out.exists() or _whole_layout(out).descriptor.digest == big.manifest
    done = cli(argv, home, tmp_path)
    assert done.stdout.split() == [str(out), big.manifest]  # the reproducible digest
    assert _whole_layout(out).descriptor.digest == big.manifest


@pytest.mark.component("registry")
@pytest.mark.usefixtures("no_user_credentials")
def test_push_killed_mid_upload_then_rerun(
    big: Big, home: dict[str, str], registry: Registry, tmp_path: Path
) -> None:
    repository = "interrupt/push"
    ref = f"{registry.host}/{repository}:v1"
    layer = read_layout(big.layout).layers[0]
    storage = registry.root / "docker" / "registry" / "v2" / "repositories" / repository
    argv = ["push", str(big.layout), ref, "--insecure"]
    # In the middle of a PATCH: chunks are 64 MiB.
    mid_chunk = KILL_AT + (16 << 20)
    kill_when(argv, home, tmp_path, lambda: _reached(storage / "_uploads", "*/data", mid_chunk))
    assert tagged(registry, repository) is None  # no tag names a half-pushed image
    assert blob_size(registry, repository, layer.digest) is None
    # Killed again once the registry has committed the layer, just before the manifest.
    committed = storage / "_layers" / "sha256" / layer.digest[7:]
    kill_when(argv, home, tmp_path, committed.exists, allow_finish=True)
    assert tagged(registry, repository) in (None, big.manifest)
    done = cli(argv, home, tmp_path)
    # The layer the registry committed is not sent again (the registry checked its digest).
    assert done.stdout.split()[1] == big.manifest
    sent = int(done.stdout.rsplit(", ", 1)[1].split()[0])
    assert sent < layer.size
    assert tagged(registry, repository) == big.manifest
    assert blob_size(registry, repository, layer.digest) == layer.size


@pytest.mark.component("registry")
@pytest.mark.usefixtures("no_user_credentials")
def test_pull_killed_while_fetching_and_unpacking_then_rerun(
    big: Big,
    home: dict[str, str],
    registry: Registry,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ref = f"{registry.host}/interrupt/pull:v1"
    push_layout(big.layout, ref, options=RegistryOptions(insecure=True))
    staging = Path(home["GGUF_HARNESS_STORE"]) / "tmp"
    argv = ["pull", ref, "--insecure"]
    # The layer is unpacked as it comes in (there is no download file): killed twice on the way.
    points: list[Callable[[], bool]] = [
        lambda: _reached(staging, f"*/layer-*/fs{MODEL_FILE}", KILL_AT // 2),
        lambda: _reached(staging, f"*/layer-*/fs{MODEL_FILE}", KILL_AT),
    ]
    for ready in points:
        kill_when(argv, home, tmp_path, ready)
        assert listed(capsys) == []
        # The run just killed swept what the one before it left: one staging directory, not two.
        assert len(list(staging.iterdir())) == 1

    # Killed once the layer is unpacked and checked, about to be committed: listed whole or not.
    def unpacked() -> bool:
        return any(staging.glob("*/layer-*/index.json"))

    kill_when(argv, home, tmp_path, unpacked, allow_finish=True)
    for row in listed(capsys):
        assert row["reference"] == ref and _model_sha256(ref) == big.sha256
    done = cli(argv, home, tmp_path)
    assert done.stdout.split()[0] == ref
    assert [row["reference"] for row in listed(capsys)] == [ref]
    assert _model_sha256(ref) == big.sha256
    assert list(staging.iterdir()) == []  # the killed runs' staging went with the rerun


def test_test_publish_killed_while_building_and_publishing_then_rerun(
    big: Big, home: dict[str, str], tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    os.link(big.gguf, project / "model.gguf")
    (project / "GGUFPackerfile").write_text(PACKERFILE)
    (project / "model.yaml").write_text(
        "schemaVersion: 1\nname: big\nexpect:\n  architecture: llama\n"
        "publish:\n  formats: [gguf-packer, modelpack]\n"
    )
    argv = ["test", "--publish", "-p", "no:cacheprovider", "-q"]
    out, published = project / "out", project / "out" / "published" / "big"
    scratch = Path(home["GGUF_HARNESS_CACHE"]) / "build" / "tmp"
    kill_when(argv, home, project, lambda: _reached(scratch, "*/layer", KILL_AT // 2))
    assert not (out / "big").exists() and not published.exists()
    # Killed while the ModelPack conversion unpacks the model into the harness cache.
    images = Path(home["GGUF_HARNESS_CACHE"]) / "images"
    kill_when(argv, home, project, lambda: _reached(images, ".unpack-*/**/*.gguf", KILL_AT))
    assert not published.exists()
    assert len(list(images.glob(".unpack-*"))) == 1
    done = cli(argv, home, project)
    assert "big: oci:out/published/big:latest-modelpack sha256:" in done.stdout
    image = _whole_layout(published, "latest-modelpack")
    assert image.layers[0].digest == big.sha256  # the GGUF itself, as a raw layer
    assert list(images.glob(".unpack-*")) == []  # the killed run's unpacked files were swept


# --- helpers -------------------------------------------------------------------------------------


def kill_when(
    argv: list[str],
    env: dict[str, str],
    cwd: Path,
    ready: Callable[[], bool],
    *,
    allow_finish: bool = False,
    timeout: float = 60,
) -> None:
    """Run the CLI and SIGKILL its whole process group as soon as ``ready()`` holds. It must
    still be running then, unless ``allow_finish`` (a point right before the end: the run may
    win the race, and the checks after hold either way)."""
    log = cwd / f"kill-{time.monotonic_ns()}.log"
    with log.open("wb") as output:
        child = subprocess.Popen(
            [sys.executable, "-m", "harness", *argv],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if child.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.002)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(30)
    if child.returncode != -signal.SIGKILL and not (allow_finish and child.returncode == 0):
        pytest.fail(
            f"gguf-harness {' '.join(argv)} ended ({child.returncode}) before the kill point:\n"
            + log.read_text(errors="replace")[-4000:]
        )


def cli(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "harness", *argv],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout}\n{done.stderr}"
    return done


def tagged(registry: Registry, repository: str) -> str | None:
    """The manifest digest ``v1`` names in the registry, if any."""
    with RegistryClient(registry.host, RegistryOptions(insecure=True)) as client:
        found = client.head_manifest(repository, "v1")
    return found.digest if found is not None else None


def blob_size(registry: Registry, repository: str, digest: str) -> int | None:
    with RegistryClient(registry.host, RegistryOptions(insecure=True)) as client:
        return client.blob_size(repository, digest)


def listed(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    """``gguf-harness list --json``, in-process: the store as a user sees it."""
    capsys.readouterr()
    assert main(["list", "--json"]) == 0
    rows: list[dict[str, object]] = json.loads(capsys.readouterr().out)
    return rows


def _reached(root: Path, pattern: str, size: int) -> bool:
    for path in root.glob(pattern):
        with contextlib.suppress(OSError):  # renamed or removed between glob and stat
            if path.stat().st_size >= size:
                return True
    return False


def _model_sha256(ref: str) -> str:
    return _sha256(Store().get(ref).path(MODEL_FILE))


def _whole_layout(path: Path, tag: str | None = None) -> Image:
    """The image of a layout whose every blob hashes to its name."""
    for blob in (path / "blobs" / "sha256").iterdir():
        assert _sha256(blob) == f"sha256:{blob.name}", f"{blob} is not whole"
    return read_layout(path, tag)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"
