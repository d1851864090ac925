"""Pulling one big blob over several Range streams, against one stream and against skopeo, where
each connection's rate is capped as object storage behind a registry caps it.

Writes a ``--size`` random blob as the one uncompressed layer of an image, pushes it to Debian's
docker-registry on 127.0.0.1, and puts ``tests/throttle.py``'s proxy in front of it at
``--rate`` MB/s per connection. Then, in one run, each step timed with ``sync`` on both ends:

- ``pull_layout`` with ``range_streams=1`` (one stream, as before) and with the default 4;
- ``skopeo copy docker://... oci:DIR`` (containers/image: one stream per blob);
- the same two ``pull_layout`` runs straight from the registry (no cap): ranges must not cost
  anything where one stream is already at disk speed.

Prints each time, MB/s, and the ratios one stream / ranged and skopeo / ranged (above 1: faster).

    .venv/bin/python benchmarks/ranges.py [--size 1G] [--rate 50]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.distribution import RegistryOptions, pull_layout, push_layout
from harness.oci import LayerEntry
from harness.units import parse_size
from tests.images import write_image
from tests.services import start_registry
from tests.throttle import ThrottledProxy


def _timed(action: Callable[[], object]) -> float:
    os.sync()
    started = time.perf_counter()
    action()
    os.sync()
    return time.perf_counter() - started


def _layout(work: Path, size: int) -> Path:
    blob = work / "model.gguf"
    with open(blob, "wb") as out:
        left = size
        while left:
            piece = os.urandom(min(16 << 20, left))
            out.write(piece)
            left -= len(piece)
    layout = work / "layout"
    write_image(layout, [LayerEntry("/models/model.gguf", blob)], cmd=["-m", "/models/model.gguf"])
    blob.unlink()
    return layout


def _skopeo(home: Path, source: str, dest: Path) -> None:
    env = {**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home / "data")}
    env = {k: v for k, v in env.items() if "proxy" not in k.lower()}
    done = subprocess.run(
        ["skopeo", "--insecure-policy", "copy", "--src-tls-verify=false",
         "--dest-oci-accept-uncompressed-layers", f"docker://{source}", f"oci:{dest}"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"skopeo failed:\n{done.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1G", help="blob size (default 1G)")
    parser.add_argument("--rate", type=float, default=50.0, help="MB/s per connection")
    args = parser.parse_args()
    size = parse_size(args.size)
    rate = args.rate * 1e6
    with tempfile.TemporaryDirectory(prefix="ranges-bench-", dir=os.environ.get("TMPDIR")) as tmp:
        work = Path(tmp)
        layout = _layout(work, size)
        with start_registry(work / "registry") as registry:
            push_layout(
                layout, f"{registry.host}/bench/model:v1", options=RegistryOptions(insecure=True)
            )
            times: dict[str, float] = {}

            def ours(host: str, streams: int, name: str) -> None:
                dest = work / name
                options = RegistryOptions(insecure=True, range_streams=streams)
                times[name] = _timed(
                    lambda: pull_layout(f"{host}/bench/model:v1", dest, options=options)
                )
                shutil.rmtree(dest)

            with ThrottledProxy(registry.host, rate) as proxy:
                ours(proxy.host, 1, "capped, one stream")
                ours(proxy.host, 4, "capped, 4 ranges")
                dest = work / "skopeo"
                times["capped, skopeo"] = _timed(
                    lambda: _skopeo(work / "home", f"{proxy.host}/bench/model:v1", dest)
                )
                shutil.rmtree(dest)
            ours(registry.host, 1, "loopback, one stream")
            ours(registry.host, 4, "loopback, 4 ranges")
    mb = size / 1e6
    print(f"blob {mb:.0f} MB, per-connection cap {args.rate:g} MB/s")
    for name, seconds in times.items():
        print(f"  {name:24} {seconds:7.2f} s  {mb / seconds:7.1f} MB/s")
    ranged = times["capped, 4 ranges"]
    print(
        f"capped: one stream / ranged {times['capped, one stream'] / ranged:.2f}x, "
        f"skopeo / ranged {times['capped, skopeo'] / ranged:.2f}x"
    )
    loopback = times["loopback, one stream"] / times["loopback, 4 ranges"]
    print(f"loopback: one stream / ranged {loopback:.2f}x")


if __name__ == "__main__":
    main()
