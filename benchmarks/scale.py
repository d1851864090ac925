"""A model of the size people release, built by the native builder, against the tools' floor.

Writes a Llama-2-7B-shaped Q4_0 GGUF (3.8 GB; the tensor data random bytes, so hashing and
compression are real work, and quantized weights are nearly incompressible too) and prints, in
one run, each step against its peer measured on the same file in the same run:

- ``sha256sum`` and ``cp`` of the file: the floor of a build (read it and hash it; write it once);
- a build of ``COPY model.gguf`` per layer format (none, zstd, gzip): seconds, the ratio to
  both peers, the disk it used beyond the input (cache + out, ``du`` counting hard links once),
  its peak RSS (``os.wait4`` of the child) and the bytes it read (``rchar``, all files);
- the same build (uncompressed) through ``ADD model.gguf`` and through a stage outside the image
  (``COPY --from=weights``): each should read the model once, as COPY does.

- then, on a fresh local registry (Debian's docker-registry on loopback): a push of the built
  image (uncompressed layer) by ``gguf-harness push`` and by ``skopeo copy``; a pull by
  ``gguf-harness pull`` into a fresh store (a usable GGUF) and by ``skopeo copy`` into an OCI
  directory (``--dest-oci-accept-uncompressed-layers``, the same bytes); the store's disk use.

Each step is a function taking the run's ``Run`` and returning a ``Row``; every command runs as
a child process, so its seconds and peak RSS are its own.

    .venv/bin/python benchmarks/scale.py [--work DIR] [--layers 32] [--harness PATH]

``--harness PATH`` runs the builds with ``harness`` imported from another checkout (compare a
branch with main in one run: ``git worktree add /tmp/base main``, then ``--harness /tmp/base``
and without). ``--layers 2`` makes a 0.3 GB model for a quick look.
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
_CMD = 'CMD ["-m", "/models/model.gguf"]\n'
PACKERFILE = f"FROM scratch\nCOPY model.gguf /models/\n{_CMD}"
# The other ways a model enters an image, built uncompressed (``--sources``).
SOURCES = {
    "ADD": f"FROM scratch\nADD model.gguf /models/\n{_CMD}",
    "stage": "FROM scratch AS weights\nCOPY model.gguf /\n"
    f"FROM scratch\nCOPY --from=weights /model.gguf /models/\n{_CMD}",
}
# Llama-2-7B: the shapes, in numpy order (rows, cols), of one block and of the whole model.
N_EMBD, N_FF, N_VOCAB, N_HEAD = 4096, 11008, 32000, 32
_BLOCK_TENSORS = [
    ("attn_q.weight", (N_EMBD, N_EMBD)),
    ("attn_k.weight", (N_EMBD, N_EMBD)),
    ("attn_v.weight", (N_EMBD, N_EMBD)),
    ("attn_output.weight", (N_EMBD, N_EMBD)),
    ("ffn_gate.weight", (N_FF, N_EMBD)),
    ("ffn_up.weight", (N_FF, N_EMBD)),
    ("ffn_down.weight", (N_EMBD, N_FF)),
]
_CHUNK = 64 << 20
_GNU_TIME = Path("/usr/bin/time")

# Run a build in a child process with ``harness`` from argv[1] (this tree or another checkout);
# argv[5]: the Packerfile's name; argv[6], if given: a file for the bytes the build read.
_BUILD = """\
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from harness.builder import BuildOptions, build
build(BuildOptions(context=Path(sys.argv[2]), output=Path(sys.argv[3]), compression=sys.argv[4],
                   packerfile=sys.argv[5] if len(sys.argv) > 5 else None))
if len(sys.argv) > 6:
    io = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    Path(sys.argv[6]).write_text(io["rchar"])
"""


@dataclass
class Run:
    work: Path
    model: Path
    harness: Path
    formats: list[str]
    peers: dict[str, float] = field(default_factory=dict)  # seconds of sha256sum and cp


@dataclass(frozen=True)
class Row:
    step: str
    seconds: float
    rss_mb: float
    disk: int | None = None  # bytes used beyond the input, when the step writes a copy
    note: str = ""


@dataclass(frozen=True)
class Timed:
    seconds: float
    rss_mb: float


def write_model(path: Path, n_layer: int, seed: int = 0) -> Path:
    """A Llama-2-7B-shaped GGUF: Q4_0 matrices and embeddings, F32 norms, random data."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("scale-7b-q4_0")
    writer.add_context_length(4096)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(N_VOCAB)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
    tensors: list[tuple[str, tuple[int, ...], str]] = [
        ("token_embd.weight", (N_VOCAB, N_EMBD), "Q4_0")
    ]
    for block in range(n_layer):
        tensors.append((f"blk.{block}.attn_norm.weight", (N_EMBD,), "F32"))
        tensors.append((f"blk.{block}.ffn_norm.weight", (N_EMBD,), "F32"))
        tensors += [(f"blk.{block}.{name}", shape, "Q4_0") for name, shape in _BLOCK_TENSORS]
    tensors += [
        ("output_norm.weight", (N_EMBD,), "F32"),
        ("output.weight", (N_VOCAB, N_EMBD), "Q4_0"),
    ]
    sizes = []
    for name, shape, kind in tensors:
        qtype = gguf.GGMLQuantizationType[kind]
        block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
        nbytes = int(np.prod(shape)) // block_size * type_size
        writer.add_tensor_info(name, shape, np.dtype(np.float32), nbytes, qtype)
        sizes.append(nbytes)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    rng = np.random.default_rng(seed)
    alignment = 32
    with open(path, "ab") as out:
        out.write(bytes(-out.tell() % alignment))
        for nbytes in sizes:
            left = nbytes
            while left:
                piece = min(left, _CHUNK)
                out.write(rng.bytes(piece))
                left -= piece
            out.write(bytes(-nbytes % alignment))
    return path


def timed(command: list[str], env: dict[str, str] | None = None) -> Timed:
    """Wall time and peak RSS of one child process. Through GNU time when there is one: a
    child forked from this process would count this process's pages as its own."""
    report = Path(tempfile.mkstemp(prefix="scale-rss-")[1])
    wrapper = ["/usr/bin/time", "-f", "%M", "-o", str(report)] if _GNU_TIME.exists() else []
    started = time.perf_counter()
    child = subprocess.Popen(
        [*wrapper, *command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert child.stderr is not None
    _pid, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    error = child.stderr.read().decode(errors="replace")
    child.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{error[-2000:]}")
    text = report.read_text().strip()
    report.unlink()
    kib = int(text.splitlines()[-1]) if wrapper and text else usage.ru_maxrss
    return Timed(seconds, kib / 1024)


def disk_used(*paths: Path) -> int:
    """Bytes on disk under ``paths`` together, each hard-linked file counted once (``du``)."""
    existing = [str(p) for p in paths if p.exists()]
    if not existing:
        return 0  # du with no paths would measure the working directory
    done = subprocess.run(["du", "-s", "-B1", "-c", *existing], capture_output=True, text=True)
    return int(done.stdout.splitlines()[-1].split()[0])


def warm_page_cache(model: Path) -> None:
    """Read the model once so every step starts with it in the page cache, the same for all."""
    subprocess.run(["cat", str(model)], stdout=subprocess.DEVNULL, check=True)


def step_sha256sum(run: Run) -> Row:
    got = timed(["sha256sum", str(run.model)])
    run.peers["sha256sum"] = got.seconds
    return Row("sha256sum", got.seconds, got.rss_mb)


def step_cp(run: Run) -> Row:
    copy = run.work / "copy.gguf"
    got = timed(["cp", str(run.model), str(copy)])
    copy.unlink()
    run.peers["cp"] = got.seconds
    return Row("cp", got.seconds, got.rss_mb, run.model.stat().st_size)


def step_build(run: Run, compression: str, source: str = "") -> Row:
    """A build of the model: COPY from the context, or ``source`` (a key of SOURCES)."""
    name = f"build {source or compression}"
    packerfile = f"GGUFPackerfile.{source}" if source else "GGUFPackerfile"
    cache, out = run.work / f"cache-{compression}", run.work / f"out-{compression}"
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "GGUF_HARNESS_CACHE": str(cache), "SOURCE_DATE_EPOCH": "0"}
    env.pop("PYTHONPATH", None)
    context = run.model.parent
    before = disk_used(context, cache, out)
    report = run.work / "read"
    command = [sys.executable, "-c", _BUILD, str(run.harness), str(context), str(out), compression]
    got = timed([*command, packerfile, str(report)], env)
    used = disk_used(context, cache, out) - before
    blob = max((p.stat().st_size for p in (out / "blobs" / "sha256").iterdir()), default=0)
    size = run.model.stat().st_size
    read = int(report.read_text()) / size if report.exists() else float("nan")
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    note = f"layer {blob / size:.3f}x model, read {read:.2f}x"
    return Row(name, got.seconds, got.rss_mb, used, note)


STEPS: list[tuple[str, Callable[[Run], Row]]] = [
    ("sha256sum", step_sha256sum),
    ("cp", step_cp),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, help="a directory for the model and the builds")
    parser.add_argument("--layers", type=int, default=32, help="blocks (32: Llama-2-7B)")
    parser.add_argument("--harness", type=Path, default=ROOT, help="checkout to build with")
    parser.add_argument("--formats", default="none,zstd,gzip", help="layer formats to build")
    parser.add_argument("--sources", default="ADD,stage", help="other builds: ADD, stage, or ''")
    parser.add_argument("--keep", action="store_true", help="keep the model for the next run")
    parser.add_argument("--no-transfers", action="store_true", help="builds only, no registry")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="scale-"))
    work.mkdir(parents=True, exist_ok=True)
    context = work / "context"
    context.mkdir(exist_ok=True)
    (context / "GGUFPackerfile").write_text(PACKERFILE)
    sources = [s for s in args.sources.split(",") if s]
    for source in sources:
        (context / f"GGUFPackerfile.{source}").write_text(SOURCES[source])
    model = context / "model.gguf"
    if not model.exists():
        started = time.perf_counter()
        write_model(model, args.layers)
        print(f"wrote {model} ({model.stat().st_size / 1e9:.2f} GB) in"
              f" {time.perf_counter() - started:.0f} s")  # fmt: skip
    run = Run(work, model, args.harness.resolve(), args.formats.split(","))
    warm_page_cache(model)
    steps = STEPS + [(f"build {f}", lambda r, f=f: step_build(r, f)) for f in run.formats]
    steps += [(f"build {s}", lambda r, s=s: step_build(r, "none", s)) for s in sources]
    size = model.stat().st_size
    print(f"model {size / 1e9:.2f} GB; harness from {run.harness}; {os.cpu_count()} CPUs")
    print(
        f"{'step':<14}{'s':>8}{'/sha256sum':>12}{'/cp':>8}{'disk x model':>14}{'RSS MB':>9}  note"
    )
    for _name, step in steps:
        _print_row(run, step(run), size)
    if "none" in run.formats and not args.no_transfers:
        for row in transfer_rows(run):
            _print_row(run, row, size)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _print_row(run: Run, row: Row, size: int) -> None:
    vs_sum = row.seconds / run.peers.get("sha256sum", row.seconds)
    vs_cp = row.seconds / run.peers.get("cp", row.seconds)
    disk = f"{row.disk / size:.3f}" if row.disk is not None else "-"
    print(
        f"{row.step:<14}{row.seconds:8.1f}{vs_sum:12.2f}{vs_cp:8.2f}{disk:>14}"
        f"{row.rss_mb:9.0f}  {row.note}",
        flush=True,
    )


def transfer_rows(run: Run) -> list[Row]:
    """Push and pull of the built image against skopeo on one fresh registry."""
    sys.path.insert(0, str(ROOT))
    from tests.services import start_registry

    out, cache = run.work / "out-transfer", run.work / "cache-transfer"
    env = {**os.environ, "GGUF_HARNESS_CACHE": str(cache), "SOURCE_DATE_EPOCH": "0"}
    env["PYTHONPATH"] = str(run.harness)
    context = run.model.parent
    timed([sys.executable, "-c", _BUILD, str(run.harness), str(context), str(out), "none"], env)
    store = run.work / "store-transfer"
    cli = {**env, "GGUF_HARNESS_STORE": str(store), "CI": "true"}
    skopeo_env = {**os.environ, "HOME": str(run.work / "home")}
    rows: list[Row] = []
    with start_registry(run.work / "registry") as registry:
        ours, theirs = f"{registry.host}/scale/ours:v1", f"{registry.host}/scale/skopeo:v1"
        harness = [sys.executable, "-m", "harness"]
        got = timed([*harness, "push", f"{out}:latest", ours, "--insecure", "-q"], cli)
        rows.append(Row("push", got.seconds, got.rss_mb))
        copy = ["skopeo", "--insecure-policy", "copy"]
        got = timed(
            [*copy, "--dest-tls-verify=false", f"oci:{out}:latest", f"docker://{theirs}"],
            skopeo_env,
        )
        rows.append(Row("push: skopeo", got.seconds, got.rss_mb, note="gzips the layer"))
        before = disk_used(store)
        got = timed([*harness, "pull", ours, "--insecure", "-q"], cli)
        used = disk_used(store) - before
        rows.append(Row("pull (store)", got.seconds, got.rss_mb, used, "a usable GGUF"))
        got = timed(
            [*copy, "--src-tls-verify=false", "--dest-oci-accept-uncompressed-layers",
             f"docker://{ours}", f"oci:{run.work / 'skopeo-pulled'}:v1"],
            skopeo_env,
        )  # fmt: skip
        rows.append(Row("pull: skopeo", got.seconds, got.rss_mb, note="to an OCI dir"))
    for path in (out, cache, store, run.work / "skopeo-pulled", run.work / "registry"):
        shutil.rmtree(path, ignore_errors=True)
    return rows


if __name__ == "__main__":
    sys.exit(main())
