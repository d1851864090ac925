"""Stored once on a reflink filesystem: a QUANTIZE build, its layer cloned against copied.

Run it on XFS (reflink=1) or btrfs. It writes an F16 Llama of about twice ``--gb`` into a build
context there, then in one run, each variant with a fresh build cache and out/ on the same
filesystem, as a child process (``--repeat`` rounds, interleaved):

- ``clone``: this tree: the layer shares the quantized file's blocks (FICLONERANGE);
- ``copy``: this tree with cloning refused (``clone_range`` answers False, as on ext4): the peer;
- ``old`` (with ``--harness PATH``, another checkout, e.g. the branch's parent): before both.

Each row: seconds to the build's data on the filesystem (QUANTIZE included, the same work in
every variant; ``sync -f`` of that filesystem included), the layer's own seconds
(its progress line), the disk the build took
beyond its input (statvfs free space, after sync), that as a multiple of the model, and then a
store import of the built layout (``Store.add_layout``) on the same filesystem, the same way.

    sudo .venv/bin/python benchmarks/reflink.py --work /mnt/xfs/bench [--gb 1] [--harness PATH]

Loop-mounting an XFS for it: ``truncate -s 8G img && mkfs.xfs -q -m reflink=1 img && mount -o
loop img /mnt/xfs``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKERFILE = """\
FROM scratch AS f16
COPY f16.gguf .
FROM scratch
QUANTIZE --from=f16 --type=Q8_0 f16.gguf model.gguf
CMD ["-m", "model.gguf"]
"""

# argv: harness checkout, context, cache, out, store, "clone" | "copy"
_CHILD = """\
import os, subprocess, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
os.environ["GGUF_HARNESS_CACHE"] = sys.argv[3]
if sys.argv[6] == "copy":
    import harness.oci._layer_sink as sink, harness.store._tarwrite as tarwrite
    sink.clone_range = tarwrite.clone_range = lambda *args: False
from harness.builder import BuildOptions, build
from harness.store import Store

def free():  # after syncfs of this filesystem only: a copy's cost includes writing it out
    subprocess.run(["sync", "-f", sys.argv[3].rsplit("/", 1)[0]], check=True)
    stats = os.statvfs(sys.argv[3].rsplit("/", 1)[0])
    return stats.f_bfree * stats.f_frsize

before, start = free(), time.perf_counter()
result = build(BuildOptions(context=Path(sys.argv[2]), output=Path(sys.argv[4])))
used = before - free()
seconds = time.perf_counter() - start
before, start = free(), time.perf_counter()
Store(sys.argv[5]).add_layout(result.output, "local/bench:q8")
used_import = before - free()
print(seconds, used, time.perf_counter() - start, used_import,
      result.config["config"]["Size"], result.manifest.digest)
"""


def write_f16(path: Path, gb: float) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.estimate_models import TinySpec, write_llama

    # 2048 wide, 54M parameters a block: Q8_0 at 1.06 bytes a parameter makes `gb`.
    layers = max(1, round((gb * 1e9 / 1.0625 - 131e6) / 45e6))
    write_llama(path, TinySpec(2048, layers, 16, 4, 128, 5632, 32000, 4096, matrix_type="F16"))


def variant(work: Path, context: Path, harness: Path, mode: str) -> list[str]:
    run = work / mode
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir()
    args = [str(harness), str(context), str(run / "cache"), str(run / "out"), str(run / "store")]
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, *args, mode], capture_output=True, text=True, check=False
    )
    shutil.rmtree(run, ignore_errors=True)  # the next variant starts from the same free space
    if done.returncode:
        raise SystemExit(f"{mode}: the build failed:\n{done.stderr[-3000:]}")
    # The layer's own seconds, from the build's progress line ("layer model.gguf: ... in 1.2 s")
    layer = [line for line in done.stderr.splitlines() if "layer model.gguf" in line]
    seconds = layer[-1].rsplit(" in ", 1)[1].split()[0] if layer else "nan"
    return [*done.stdout.split(), seconds]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="a directory on XFS or btrfs")
    parser.add_argument("--gb", type=float, default=1.0, help="size of the quantized model")
    parser.add_argument("--harness", type=Path, help="another checkout: the 'old' row")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every variant")
    options = parser.parse_args()
    context = options.work / "context"
    context.mkdir(parents=True, exist_ok=True)
    (context / "GGUFPackerfile").write_text(PACKERFILE)
    f16 = context / "f16.gguf"
    if not f16.exists():
        start = time.perf_counter()
        write_f16(f16, options.gb)
        seconds = time.perf_counter() - start
        print(f"input: {f16.stat().st_size / 1e9:.2f} GB F16, written in {seconds:.0f} s")
    modes = [("clone", ROOT), ("copy", ROOT)]
    if options.harness is not None:
        modes.append(("old", options.harness))
    print(f"{'variant':8} {'build s':>8} {'layer s':>8} {'disk GB':>8} {'x model':>8}"
          f" {'import s':>9} {'import GB':>10}  manifest")  # fmt: skip
    for _ in range(options.repeat):  # interleaved: the machine's load drifts
        for mode, harness in modes:
            seconds, used, import_s, import_used, size, digest, layer_s = variant(
                options.work, context, harness, mode
            )
            model = int(size)
            print(
                f"{mode:8} {float(seconds):8.1f} {float(layer_s):8.1f} {int(used) / 1e9:8.2f}"
                f" {int(used) / model:8.3f} {float(import_s):9.1f}"
                f" {int(import_used) / 1e9:10.3f}  {digest[:19]}",
                flush=True,
            )
    print(f"model: {model / 1e9:.2f} GB Q8_0; disk: statvfs free space of {options.work}")


if __name__ == "__main__":
    main()
