"""Push and pull of a big model image to a registry on loopback: ours against skopeo.

Builds an image of a model file of at least 250 MB (random bytes behind a GGUF magic: quantized
weights are about as incompressible), starts Debian's docker-registry on 127.0.0.1, then per
round, against a fresh registry (so that skopeo's blob-location cache cannot turn its push into
a cross-repository mount):

- push: ``harness.distribution.push_layout`` vs ``skopeo copy oci:LAYOUT docker://...``
- pull: ``harness.distribution.pull_layout`` (every digest checked, an OCI layout written) vs
  ``skopeo copy docker://... oci:DIR``; and ``harness.store.Store.pull`` (download, verify,
  unpack the layer, link the model in place) for reference

and a plain sha256 pass over the layer blob, the floor any verified transfer pays. Prints each
time, its throughput, and the ratio skopeo time / our time (1.0 or more: at least as fast).

    .venv/bin/python benchmarks/push_pull.py [--size-mb 260] [--rounds 2] [--compression gzip]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.distribution import RegistryOptions, pull_layout, push_layout
from harness.oci import LayerEntry, LayoutWriter
from harness.store import Store
from tests.services import start_registry

PLAIN = RegistryOptions(insecure=True)
_CHUNK = 1 << 20


def _model(path: Path, size: int) -> None:
    with open(path, "wb") as out:
        out.write(b"GGUF" + (3).to_bytes(4, "little"))
        left = size - 8
        while left:
            piece = os.urandom(min(left, 16 << 20))
            out.write(piece)
            left -= len(piece)


def _layout(model: Path, out: Path, compression: str) -> Path:
    with LayoutWriter(out) as writer:
        layer = writer.add_layer([LayerEntry("/models/model.gguf", model)], compression)
        config = {
            "architecture": "amd64",
            "config": {"Cmd": ["-m", "/models/model.gguf"]},
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        }
        writer.tag(writer.add_image(config, [layer]), "v1")
    return out


def _sha256(path: Path) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)


def _skopeo(home: Path, *args: str) -> None:
    # A private HOME/XDG dir: skopeo's blob-info cache starts empty.
    env = {**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home / "data")}
    env = {k: v for k, v in env.items() if "proxy" not in k.lower()}
    done = subprocess.run(
        ["skopeo", "--insecure-policy", *args], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"skopeo {' '.join(args)} failed:\n{done.stderr}")


def _timed(action: Callable[[], object]) -> float:
    # Start each step with no dirty pages left by the one before: otherwise a step pays for
    # the writeback of its predecessor and the order of the steps decides the ratio.
    os.sync()
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _record(times: dict[str, list[float]], name: str, seconds: float) -> None:
    times.setdefault(name, []).append(seconds)


def _round(
    work: Path, layout: Path, number: int, pulls: int, times: dict[str, list[float]]
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
                    home,
                    "copy",
                    "--dest-tls-verify=false",
                    f"oci:{layout}:v1",
                    f"docker://{theirs}",
                ),
            ),
        ]
        for name, action in pushes if number % 2 == 0 else pushes[::-1]:
            _record(times, name, _timed(action))
        fetches: list[tuple[str, Callable[[], object]]] = [
            ("pull: ours", lambda: pull_layout(ours, work / "ours", options=PLAIN)),
            (
                "pull: skopeo copy",
                lambda: _skopeo(
                    home, "copy", "--src-tls-verify=false", f"docker://{theirs}",
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
        _record(times, "pull into the store (+unpack)", seconds)
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=260, help="model size in MB (>= 250)")
    parser.add_argument("--rounds", type=int, default=2, help="fresh registries, pushes each")
    parser.add_argument("--pulls", type=int, default=3, help="pulls each per round")
    parser.add_argument("--compression", default="gzip", choices=("gzip", "zstd", "none"))
    args = parser.parse_args()
    if shutil.which("skopeo") is None or shutil.which("docker-registry") is None:
        raise SystemExit("needs skopeo and docker-registry (scripts/setup.sh installs them)")
    size = args.size_mb * 1_000_000
    with tempfile.TemporaryDirectory(prefix="push-pull-", dir=os.environ.get("TMPDIR")) as tmp:
        work = Path(tmp)
        model = work / "model.gguf"
        _model(model, size)
        layout = _layout(model, work / "layout", args.compression)
        blob = max((layout / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
        blob_size = blob.stat().st_size
        times: dict[str, list[float]] = {}
        for _ in range(2):
            _record(times, "sha256 pass over the layer blob", _timed(lambda: _sha256(blob)))
        for number in range(args.rounds):
            _round(work / f"round-{number}", layout, number, args.pulls, times)
        _print(times, size, blob_size, args)


def _print(
    times: dict[str, list[float]], size: int, blob_size: int, args: argparse.Namespace
) -> None:
    best = {name: min(values) for name, values in times.items()}
    print(
        f"model {size / 1e6:.0f} MB, layer blob {blob_size / 1e6:.0f} MB ({args.compression}), "
        f"{args.rounds} rounds, best of each; registry: Debian docker-registry on 127.0.0.1"
    )
    print(f"{'step':32} {'best s':>7} {'MB/s':>6} {'median s':>9}   all runs")
    for name, seconds in best.items():
        runs = ", ".join(f"{t:.2f}" for t in times[name])
        median = statistics.median(times[name])
        print(f"{name:32} {seconds:7.2f} {blob_size / 1e6 / seconds:6.0f} {median:9.2f}   {runs}")
    push = best["push: skopeo copy"] / best["push: ours"]
    pull = best["pull: skopeo copy"] / best["pull: ours"]
    medians = {name: statistics.median(values) for name, values in times.items()}
    push_median = medians["push: skopeo copy"] / medians["push: ours"]
    pull_median = medians["pull: skopeo copy"] / medians["pull: ours"]
    floor = best["sha256 pass over the layer blob"]
    for what, ratio, median_ratio in (("push", push, push_median), ("pull", pull, pull_median)):
        verdict = "at least as fast" if ratio >= 1 else "slower"
        print(f"{what} ratio skopeo/ours: {ratio:.2f} best, {median_ratio:.2f} median ({verdict})")
    print(
        f"ours vs a plain sha256 pass: push {best['push: ours'] / floor:.1f}x, "
        f"pull {best['pull: ours'] / floor:.1f}x its time "
        f"(median sha256 {statistics.median(times['sha256 pass over the layer blob']):.2f} s)"
    )


if __name__ == "__main__":
    main()
