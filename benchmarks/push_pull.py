"""Push and pull of a big model image to a registry on loopback: ours against skopeo and against
the floor any verified transfer pays (``sha256sum`` of the blob plus one ``cp`` of it).

Writes a Llama-7B-shaped Q4_0 GGUF (``--size``: 4G is the 32 layers of a real 7B; smaller
sizes keep fewer layers) whose tensors are random bytes, builds a one-layer image of it
(``--compression``, default an uncompressed tar), starts Debian's docker-registry on
127.0.0.1, then per round, against a fresh registry (so that skopeo's blob-location cache
cannot turn its push into a cross-repository mount):

- push: ``harness.distribution.push_layout`` vs ``skopeo copy oci:LAYOUT docker://...``
- pull: ``harness.distribution.pull_layout`` (every digest checked, an OCI layout written) vs
  ``skopeo copy --dest-oci-accept-uncompressed-layers docker://... oci:DIR``; and
  ``harness.store.Store.pull`` (download, verify, unpack: the GGUF usable in place by
  llama.cpp), whose files are counted (one copy)
- with ``--kill``: a push and a store pull (the CLI, in a subprocess) killed with SIGKILL half
  way, then rerun: the rerun's time and the bytes it sent (push) or fetched (pull, from the
  registry's access log) again; the pull's rerun time against a full pull's; and a push
  stopped with SIGTERM once half is acknowledged (the upload journal says so), per chunk size
  (``--chunks``, MiB, default 8,64): how long the stop took, the bytes its rerun sent again and
  its time, against a whole push by the CLI with that chunk size

skopeo (containers/image) gzips an uncompressed layer on its way to a registry: with the
default ``--compression none`` its push does more work than ours; ``--compression zstd`` is the
like-for-like push race (both send the blob as it is).

Every timed step starts and ends with ``sync`` (its writeback is its own). Prints each time, its
throughput, and the ratios: skopeo time / ours (1.0 or more: at least as fast) and ours / floor
(the issue asks for at most 1.5).

    .venv/bin/python benchmarks/push_pull.py [--size 4G] [--rounds 1] [--pulls 1] [--kill]
        [--chunks 8,64] [--work DIR (keeps the built layout there for the next run)]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gguf
import numpy as np

from harness.distribution import RegistryOptions, pull_layout, push_layout
from harness.oci import LayerEntry, LayoutWriter
from harness.store import Store
from tests.services import Registry, start_registry

PLAIN = RegistryOptions(insecure=True)
# Without it skopeo gzips an uncompressed layer on its way into an OCI directory (4.5 s of CPU
# per GB on 2 cores): the same bytes written, as ours, is the fair race.
SAME_LAYERS = ("--dest-oci-accept-uncompressed-layers",)
ROOT = Path(__file__).resolve().parents[1]
_Q4_0 = gguf.GGMLQuantizationType.Q4_0
_EMBD, _FF, _VOCAB = 4096, 11008, 32000
REFETCHED: list[int] = []  # blob bytes each store pull rerun after a kill fetched


def _q4_0_bytes(rows: int, cols: int) -> int:
    return rows * cols // 32 * 18


def write_7b_gguf(path: Path, size: int) -> None:
    """A Llama-2-7B-shaped Q4_0 GGUF of about ``size`` bytes (as many of the 32 blocks as fit),
    written tensor by tensor (memory stays at one tensor) from random bytes."""
    layer = 4 * _q4_0_bytes(_EMBD, _EMBD) + 3 * _q4_0_bytes(_FF, _EMBD)
    outer = 2 * _q4_0_bytes(_VOCAB, _EMBD)
    blocks = max(1, min(32, round((size - outer) / layer)))
    tensors: list[tuple[str, int, int]] = [("token_embd.weight", _VOCAB, _EMBD)]
    for n in range(blocks):
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            tensors.append((f"blk.{n}.{name}.weight", _EMBD, _EMBD))
        tensors.append((f"blk.{n}.ffn_gate.weight", _FF, _EMBD))
        tensors.append((f"blk.{n}.ffn_up.weight", _FF, _EMBD))
        tensors.append((f"blk.{n}.ffn_down.weight", _EMBD, _FF))
    tensors.append(("output.weight", _VOCAB, _EMBD))
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("Benchmark Llama 7B shape")
    writer.add_context_length(4096)
    writer.add_embedding_length(_EMBD)
    writer.add_feed_forward_length(_FF)
    writer.add_block_count(blocks)
    writer.add_head_count(32)
    writer.add_head_count_kv(32)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_Q4_0))
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"t{i}" for i in range(_VOCAB)])
    for name, rows, cols in tensors:
        shape = (rows, cols // 32 * 18)
        writer.add_tensor_info(name, shape, np.dtype(np.uint8), rows * shape[1], raw_dtype=_Q4_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    rng = np.random.default_rng(0)
    for _name, rows, cols in tensors:
        data = rng.bytes(rows * (cols // 32 * 18))
        writer.write_tensor_data(np.frombuffer(data, np.uint8).reshape(rows, -1))
    writer.close()


def _layout(work: Path, size: int, compression: str) -> Path:
    out = work / f"layout-{size}-{compression}"
    if (out / "index.json").is_file():
        return out
    model = work / "model.gguf"
    write_7b_gguf(model, size)
    with LayoutWriter(out) as writer:
        layer = writer.add_layer([LayerEntry("/models/model.gguf", model)], compression)
        config = {
            "architecture": "amd64",
            "config": {"Cmd": ["-m", "/models/model.gguf"]},
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        }
        writer.tag(writer.add_image(config, [layer]), "v1")
    model.unlink()  # the layout holds it: one copy on disk while the benchmark runs
    return out


def _skopeo(home: Path, *args: str) -> None:
    # A private HOME/XDG dir: skopeo's blob-info cache starts empty.
    env = {**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home / "data")}
    env = {k: v for k, v in env.items() if "proxy" not in k.lower()}
    done = subprocess.run(
        ["skopeo", "--insecure-policy", *args], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"skopeo {' '.join(args)} failed:\n{done.stderr}")


def _floor(blob: Path, copy: Path) -> None:
    """``sha256sum`` of the blob, then one write of it: what a verified transfer cannot beat."""
    subprocess.run(["sha256sum", str(blob)], check=True, capture_output=True)
    subprocess.run(["cp", str(blob), str(copy)], check=True)


def _timed(action: Callable[[], object]) -> float:
    # Each step starts with no dirty pages left by the one before and pays for its own
    # writeback: otherwise the order of the steps decides the ratio.
    os.sync()
    started = time.perf_counter()
    action()
    os.sync()
    return time.perf_counter() - started


def _record(times: dict[str, list[float]], name: str, seconds: float) -> None:
    times.setdefault(name, []).append(seconds)


def _cli_env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GGUF_HARNESS_")}
    env |= {
        "GGUF_HARNESS_STORE": str(work / "cli-store"),
        "GGUF_HARNESS_CACHE": str(work / "cli-cache"),
        "DOCKER_CONFIG": str(work / "no-docker-config"),
        "PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT)),
        "CI": "true",
    }
    return env


def _cli(
    argv: list[str],
    env: dict[str, str],
    kill_when: Callable[[], bool] | None,
    signum: int = signal.SIGKILL,
) -> str:
    """Run ``gguf-harness ARGV``; with ``kill_when``, send it ``signum`` once that holds."""
    child = subprocess.Popen(
        [sys.executable, "-m", "harness", *argv], env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
    )  # fmt: skip
    if kill_when is None:
        out, _ = child.communicate()
        if child.returncode != 0:
            raise SystemExit(f"gguf-harness {' '.join(argv)} failed ({child.returncode})")
        return out
    while child.poll() is None and not kill_when():
        time.sleep(0.02)
    if child.poll() is not None:
        raise SystemExit(f"gguf-harness {' '.join(argv)} ended before the kill point")
    os.killpg(child.pid, signum)
    child.wait()
    return ""


def _bytes_under(root: Path, pattern: str) -> int:
    return max((p.stat().st_size for p in root.glob(pattern) if p.is_file()), default=0)


def _kill_and_rerun(
    work: Path, layout: Path, registry: Registry, half: int, times: dict[str, list[float]]
) -> None:
    env = _cli_env(work)
    ref = f"{registry.host}/bench/killed:v1"
    uploads = registry.root / "docker/registry/v2/repositories/bench/killed/_uploads"
    push = ["push", f"{layout}:v1", ref, "--insecure"]
    _cli(push, env, lambda: _bytes_under(uploads, "*/data") >= half)
    started = time.perf_counter()
    out = _cli(push, env, None)
    _record(times, "push rerun after a kill at 1/2", time.perf_counter() - started)
    sent = int(out.rsplit(", ", 1)[1].split()[0])
    print(f"push rerun after the kill sent {sent / 1e6:.0f} MB", file=sys.stderr)
    staging = work / "cli-store" / "tmp"
    pull = ["pull", ref, "--insecure"]
    before = registry.log.stat().st_size
    _cli(pull, env, lambda: _bytes_under(staging, "*/*/fs/models/model.gguf") >= half)
    # The registry logs a request when it ends: the killed pull's GET, a moment after the kill.
    deadline = time.monotonic() + 30
    while _fetched_since(registry, before) < half and time.monotonic() < deadline:
        time.sleep(0.05)
    mark = registry.log.stat().st_size
    started = time.perf_counter()
    _cli(pull, env, None)
    _record(times, "store pull rerun after a kill at 1/2", time.perf_counter() - started)
    fetched = _fetched_since(registry, mark)
    print(
        f"store pull rerun after the kill fetched {fetched / 1e6:.0f} MB of the "
        f"{2 * half / 1e6:.0f} MB layer ({fetched / (2 * half):.0%})",
        file=sys.stderr,
    )
    REFETCHED.append(fetched)
    shutil.rmtree(work / "cli-store", ignore_errors=True)


def _fetched_since(registry: Registry, mark: int) -> int:
    """The blob bytes the registry sent since ``mark`` in its access log (each GET's bytes
    written: ``"GET /v2/.../blobs/sha256:... HTTP/1.1" STATUS BYTES``)."""
    with open(registry.log, "rb") as log:
        log.seek(mark)
        text = log.read().decode(errors="replace")
    found = re.findall(r'"GET /v2/[^ ]*/blobs/sha256:[0-9a-f]+ HTTP/[0-9.]+" 20[06] (\d+)', text)
    return sum(int(size) for size in found)


def _round(
    work: Path,
    layout: Path,
    number: int,
    pulls: int,
    kill: bool,
    chunks: list[str],
    times: dict[str, list[float]],
) -> None:
    """One fresh registry: both pushes (order alternating by round), then ``pulls`` pulls each
    (order alternating), then a pull into the store."""
    with start_registry(work / "registry") as registry:
        ours, theirs = f"{registry.host}/bench/ours:v1", f"{registry.host}/bench/skopeo:v1"
        home = work / "home"
        pushes: list[tuple[str, Callable[[], object]]] = [
            ("push: ours", lambda: push_layout(layout, ours, options=PLAIN)),
            (
                "push: skopeo copy",
                lambda: _skopeo(
                    home, "copy", "--dest-tls-verify=false", f"oci:{layout}:v1",
                    f"docker://{theirs}",
                ),
            ),
        ]  # fmt: skip
        for name, action in pushes if number % 2 == 0 else pushes[::-1]:
            _record(times, name, _timed(action))
        fetches: list[tuple[str, Callable[[], object]]] = [
            ("pull: ours", lambda: pull_layout(ours, work / "ours", options=PLAIN)),
            (
                "pull: skopeo copy",
                lambda: _skopeo(
                    home, "copy", "--src-tls-verify=false", *SAME_LAYERS, f"docker://{theirs}",
                    f"oci:{work / 'skopeo'}:v1",
                ),
            ),
        ]  # fmt: skip
        for repeat in range(pulls):
            for name, action in fetches if (number + repeat) % 2 == 0 else fetches[::-1]:
                _record(times, name, _timed(action))
                for leftover in ("ours", "skopeo"):
                    shutil.rmtree(work / leftover, ignore_errors=True)
        store = Store(work / "store")
        seconds = _timed(lambda: store.pull(ours, options=PLAIN))
        _record(times, "pull into the store (usable GGUF)", seconds)
        _count_copies(work / "store")
        shutil.rmtree(work / "store", ignore_errors=True)
        if kill:
            blob = max((layout / "blobs/sha256").iterdir(), key=lambda p: p.stat().st_size)
            _kill_and_rerun(work, layout, registry, blob.stat().st_size // 2, times)
            for chunk in chunks:
                _stop_and_rerun(work, layout, registry, blob.stat().st_size // 2, chunk, times)
    shutil.rmtree(work, ignore_errors=True)


def _stop_and_rerun(
    work: Path,
    layout: Path,
    registry: Registry,
    half: int,
    chunk: str,
    times: dict[str, list[float]],
) -> None:
    """A CLI push stopped with SIGTERM once ``half`` is acknowledged (its upload journal says
    so), then rerun; against a whole CLI push of the same chunk size to another repository."""
    env = _cli_env(work)
    journals = work / "cli-cache" / "uploads"
    size = f"{int(chunk)}MiB"
    whole = ["push", f"{layout}:v1", f"{registry.host}/bench/whole-{chunk}:v1", "--insecure"]
    started = time.perf_counter()
    _cli([*whole, "--chunk-size", size], env, None)
    _record(times, f"push, {size} chunks (CLI, whole)", time.perf_counter() - started)
    push = ["push", f"{layout}:v1", f"{registry.host}/bench/stopped-{chunk}:v1", "--insecure"]
    push += ["--chunk-size", size]
    stopping: list[float] = []

    def acknowledged() -> bool:
        for path in journals.glob("*.json"):
            try:
                if json.loads(path.read_bytes())["offset"] >= half:
                    stopping.append(time.perf_counter())
                    return True
            except (OSError, ValueError):
                continue
        return False

    _cli(push, env, acknowledged, signal.SIGTERM)
    _record(times, f"push, {size} chunks: SIGTERM to exit", time.perf_counter() - stopping[0])
    started = time.perf_counter()
    out = _cli(push, env, None)
    _record(times, f"push, {size} chunks: rerun after SIGTERM", time.perf_counter() - started)
    sent = int(out.rsplit(", ", 1)[1].split()[0])
    print(f"push rerun after SIGTERM ({size} chunks) sent {sent / 1e6:.0f} MB", file=sys.stderr)


def _count_copies(store: Path) -> None:
    """How many distinct files over 1 MB the store holds after a pull, and their bytes."""
    inodes = {}
    for path in store.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_size > 1 << 20:
            inodes[path.stat().st_ino] = path.stat().st_size
    print(
        f"store after pull: {len(inodes)} file(s) over 1 MB, {sum(inodes.values()) / 1e6:.0f} MB",
        file=sys.stderr,
    )


def _parse_size(text: str) -> int:
    units = {"K": 10**3, "M": 10**6, "G": 10**9}
    if text[-1:].upper() in units:
        return int(float(text[:-1]) * units[text[-1].upper()])
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="260M", help="model size: 260M, 4G (default 260M)")
    parser.add_argument("--rounds", type=int, default=1, help="fresh registries, pushes each")
    parser.add_argument("--pulls", type=int, default=1, help="pulls each per round")
    parser.add_argument("--compression", default="none", choices=("gzip", "zstd", "none"))
    parser.add_argument("--kill", action="store_true", help="kill a push and a pull, rerun")
    parser.add_argument(
        "--chunks", default="8,64", help="upload chunk sizes in MiB of the SIGTERM runs (--kill)"
    )
    parser.add_argument("--work", type=Path, help="keep the built layout here between runs")
    args = parser.parse_args()
    if shutil.which("skopeo") is None or shutil.which("docker-registry") is None:
        raise SystemExit("needs skopeo and docker-registry (scripts/setup.sh installs them)")
    size = _parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="push-pull-", dir=args.work) as tmp:
        work = Path(tmp)
        layout = _layout(args.work or work, size, args.compression)
        blob = max((layout / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
        times: dict[str, list[float]] = {}
        for _ in range(2):
            seconds = _timed(lambda: _floor(blob, work / "floor-copy"))
            _record(times, "floor: sha256sum + cp", seconds)
            (work / "floor-copy").unlink()
        for number in range(args.rounds):
            _round(
                work / f"round-{number}", layout, number, args.pulls, args.kill,
                args.chunks.split(","), times,
            )  # fmt: skip
        _print(times, blob.stat().st_size, args)


def _print(times: dict[str, list[float]], blob_size: int, args: argparse.Namespace) -> None:
    best = {name: min(values) for name, values in times.items()}
    print(
        f"layer blob {blob_size / 1e6:.0f} MB ({args.compression}), {args.rounds} round(s), "
        f"best of each; registry: Debian docker-registry on 127.0.0.1; {os.cpu_count()} CPUs"
    )
    print(f"{'step':38} {'best s':>7} {'MB/s':>6} {'median s':>9}   all runs")
    for name, seconds in best.items():
        runs = ", ".join(f"{t:.2f}" for t in times[name])
        median = statistics.median(times[name])
        print(f"{name:38} {seconds:7.2f} {blob_size / 1e6 / seconds:6.0f} {median:9.2f}   {runs}")
    floor = best["floor: sha256sum + cp"]
    for what in ("push", "pull"):
        ratio = best[f"{what}: skopeo copy"] / best[f"{what}: ours"]
        verdict = "at least as fast" if ratio >= 1 else "slower"
        print(
            f"{what}: skopeo/ours {ratio:.2f} ({verdict}); ours/floor "
            f"{best[f'{what}: ours'] / floor:.2f} (target <= 1.5)"
        )
    store = best["pull into the store (usable GGUF)"]
    print(
        f"pull into the store: ours/floor {store / floor:.2f}, "
        f"skopeo pull/ours {best['pull: skopeo copy'] / store:.2f}"
    )
    if args.kill:
        rerun = best["store pull rerun after a kill at 1/2"]
        fetched = min(REFETCHED)
        print(
            f"store pull killed at 1/2, rerun: {fetched / 1e6:.0f} MB fetched again of "
            f"{blob_size / 1e6:.0f} MB ({fetched / blob_size:.0%}); rerun/full pull "
            f"{rerun / store:.2f}"
        )


if __name__ == "__main__":
    main()
