"""Taking a model out of an image: COPY --from an OCI layout, and the image files estimate and
smoke read (``unpack``), against ``sha256sum`` and ``cp`` of the same model in the same run.

Writes a Llama-shaped Q4_0 GGUF (benchmarks/scale.py's; random bytes), builds it into an
uncompressed OCI layout, then, each in a child process with ``harness`` imported from
``--harness`` (this checkout by default; another one to compare, e.g. ``git archive main
harness | tar -x -C /tmp/base``), prints its seconds, the bytes it read (``rchar``, all files)
and the disk it used (``du`` of what it wrote, or with ``--statvfs`` the filesystem's use
before and after), each over the model's size:

- ``copy-from``: a build of ``COPY --from=oci-layout://<the image> /models/ /models/``;
- ``unpack-one``: ``unpack(image, ["/models/model.gguf"])``, what estimate and smoke ask for;
- ``unpack-all``: ``unpack(image)``, the whole tree (publish).

    .venv/bin/python benchmarks/extract.py [--work DIR] [--layers 8] [--harness PATH ...]

On a reflink filesystem (XFS reflink=1, btrfs) give ``--work`` there and ``--statvfs`` (``du``
counts shared blocks once per file): the unpacked files share the layer's blocks.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import _CMD, warm_page_cache, write_model

ROOT = Path(__file__).resolve().parent.parent

# argv: harness checkout, what, the image's layout, a work directory; prints "seconds rchar".
_CHILD = """\
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
what, layout, work = sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
started = time.perf_counter()
if what == "copy-from":
    from harness.builder import BuildOptions, build
    build(BuildOptions(context=work / "context", output=work / "out"))
else:
    from harness.oci import read_layout, unpack
    paths = ["/models/model.gguf"] if what == "unpack-one" else None
    unpack(read_layout(layout), paths, base=work / "images")
seconds = time.perf_counter() - started
io = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
print(seconds, io["rchar"])
"""


def _used(where: Path, statvfs: bool) -> int:
    """Bytes in use: the filesystem's (statvfs; blocks shared by reflinks counted once, but any
    other writer on it counts too), or under ``where`` (``du``, hard links counted once)."""
    if statvfs:
        # XFS frees a removed file's blocks in the background: wait until the figure settles.
        last = -1
        for _ in range(60):
            os.sync()
            stats = os.statvfs(where)
            now = (stats.f_blocks - stats.f_bfree) * stats.f_frsize
            if now == last:
                return now
            last = now
            time.sleep(0.5)
        return last
    if not where.exists():
        return 0
    done = subprocess.run(["du", "-s", "-B1", str(where)], capture_output=True, text=True)
    return int(done.stdout.split()[0])


def _peer(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, help="a directory for the model and the runs")
    parser.add_argument("--layers", type=int, default=8, help="blocks (8: ~1 GB, 32: 3.8 GB)")
    parser.add_argument("--harness", type=Path, nargs="*", default=[ROOT], help="checkouts")
    parser.add_argument(
        "--statvfs", action="store_true", help="disk by the filesystem's free space (a private one)"
    )
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="extract-"))
    work.mkdir(parents=True, exist_ok=True)
    context = work / "context"
    context.mkdir(exist_ok=True)
    model = context / "model.gguf"
    if not model.exists():
        write_model(model, args.layers)
    size = model.stat().st_size
    (context / "GGUFPackerfile").write_text(f"FROM scratch\nCOPY model.gguf /models/\n{_CMD}")
    env = {**os.environ, "GGUF_HARNESS_CACHE": str(work / "cache"), "SOURCE_DATE_EPOCH": "0"}
    env.pop("PYTHONPATH", None)
    layout = work / "image"
    if not layout.exists():
        sys.path.insert(0, str(ROOT))
        from harness.builder import BuildOptions, build

        os.environ.update(GGUF_HARNESS_CACHE=str(work / "cache"))
        build(BuildOptions(context=context, output=layout, compression="none"))
        shutil.rmtree(work / "cache")
    warm_page_cache(model)
    copy = work / "copy"
    peers = {
        "sha256sum": _peer(["sha256sum", str(model)]),
        "cp": _peer(["cp", "--reflink=never", str(model), copy]),
    }
    copy.unlink()
    print(f"model {size / 1e9:.2f} GB, {os.cpu_count()} CPUs; work {work}")
    print("  ".join(f"{name} {seconds:.2f} s" for name, seconds in peers.items()))
    print(f"{'harness':<28}{'step':<12}{'s':>7}{'/sha256sum':>11}{'/cp':>6}{'read':>7}{'disk':>7}")
    for harness in args.harness:
        for what in ("copy-from", "unpack-one", "unpack-all"):
            run = work / "run"
            shutil.rmtree(run, ignore_errors=True)
            (run / "context").mkdir(parents=True)
            (run / "context" / "GGUFPackerfile").write_text(
                f"FROM scratch\nCOPY --from=oci-layout://{layout} /models/ /models/\n{_CMD}"
            )
            before = _used(run, args.statvfs)
            done = subprocess.run(
                [sys.executable, "-c", _CHILD, str(harness.resolve()), what, str(layout), str(run)],
                env={**env, "GGUF_HARNESS_CACHE": str(run / "cache")},
                capture_output=True,
                text=True,
                check=True,
            )
            used = _used(run, args.statvfs) - before
            seconds, rchar = done.stdout.split()
            print(
                f"{str(harness)[-27:]:<28}{what:<12}{float(seconds):7.2f}"
                f"{float(seconds) / peers['sha256sum']:11.2f}{float(seconds) / peers['cp']:6.2f}"
                f"{int(rchar) / size:7.2f}{used / size:7.2f}",
                flush=True,
            )
            shutil.rmtree(run, ignore_errors=True)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
