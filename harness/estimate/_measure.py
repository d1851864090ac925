"""Ground truth: load a model through llama.cpp (llama-cpp-python) with the settings llama-server
would use and read the buffer sizes llama.cpp itself logs.

The lines read, at the pinned commit:

- ``load_tensors: <buffer> model buffer size = N MiB`` (llama-model.cpp, one per weight buffer)
- ``llama_context: <buffer>  output buffer size = N MiB`` (llama-context.cpp, output_reserve)
- ``llama_kv_cache: <buffer> KV buffer size = N MiB`` (llama-kv-cache.cpp, one per cache and buffer)
- ``llama_memory_recurrent: <buffer> RS buffer size = N MiB`` (llama-memory-recurrent.cpp)
- ``~llama_context: <buffer> compute buffer size is N MiB`` (debug, four decimals, printed when
  the context is freed; ``sched_reserve: ... compute buffer size = N MiB`` has two)

Host weight repacking (the CPU_REPACK extra buffer type) follows the settings, as llama-server's
``--repack`` / ``--no-repack`` do (on by default).
"""

from __future__ import annotations

import ctypes
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

from ._context import server_context
from ._model import ModelInfo
from ._settings import RunSettings

__all__ = ["Measured", "measure", "measure_server"]

_MIB = 1024 * 1024
_LINES = {
    "weights": re.compile(r"load_tensors:\s+(\S+) model buffer size =\s+([\d.]+) MiB"),
    "output": re.compile(r"llama_context:\s+(\S+)\s+output buffer size =\s+([\d.]+) MiB"),
    "kv_cache": re.compile(r"llama_kv_cache:\s+(\S+) KV buffer size =\s+([\d.]+) MiB"),
    "recurrent": re.compile(r"llama_memory_recurrent:\s+(\S+) RS buffer size =\s+([\d.]+) MiB"),
    "compute": re.compile(r"~llama_context:\s+(\S+) compute buffer size is\s+([\d.]+) MiB"),
}
_COMPUTE_FALLBACK = re.compile(r"sched_reserve:\s+(\S+) compute buffer size =\s+([\d.]+) MiB")
# one llama.cpp log callback per process: one measurement at a time
_LOCK = threading.Lock()
_FLASH = {None: -1, False: 0, True: 1}
_GGML_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8,
               "iq4_nl": 20, "bf16": 30}  # fmt: skip


@dataclass(frozen=True)
class Measured:
    """Buffer sizes llama.cpp reported, in bytes, per buffer name (e.g. ``CPU``, ``CPU_Mapped``).

    Figures are printed in MiB with two decimals (four for compute buffers), so each stands for
    an interval; ``figures`` counts the printed figures summed into each component.
    """

    weights: Mapping[str, int]
    output: Mapping[str, int]
    kv_cache: Mapping[str, int]
    compute: Mapping[str, int]
    log: tuple[str, ...] = field(repr=False)
    figures: Mapping[str, int] = field(default_factory=dict)  # printed figures per component

    @property
    def totals(self) -> dict[str, int]:
        return {
            "weights": sum(self.weights.values()),
            "kv_cache": sum(self.kv_cache.values()),
            "compute": sum(self.compute.values()),
            "output": sum(self.output.values()),
        }


def measure(
    path: str | Path,
    settings: RunSettings | None = None,
    *,
    model: ModelInfo | None = None,
    progress: Callable[[str], None] | None = None,
) -> Measured:
    """Load ``path`` on the CPU with llama-server's context for ``settings``; report its buffers.

    ``model`` is the already-read header of ``path`` (read here when not given); each line of
    llama.cpp's log goes to ``progress`` once the load is over.
    """
    if model is None:
        from ._estimate import load_model

        model = load_model(path)
    try:
        import llama_cpp.llama_cpp as binding
    except (ImportError, OSError) as error:
        raise HarnessError(f"llama.cpp is not available: {error}") from error
    settings = (settings or RunSettings()).resolved()
    cp = server_context(model, settings)
    lines: list[str] = []
    with _LOCK, _captured(binding, lines):
        binding.llama_backend_init()
        mparams = binding.llama_model_default_params()
        mparams.n_gpu_layers = 0
        mparams.use_extra_bufts = bool(settings.repack)
        mparams.load_mode = (
            binding.LLAMA_LOAD_MODE_MMAP if settings.mmap else binding.LLAMA_LOAD_MODE_NONE
        )
        handle = binding.llama_model_load_from_file(str(path).encode(), mparams)
        if not handle:
            raise HarnessError(f"llama.cpp could not load {path}: {_last_error(lines)}")
        try:
            cparams = _context_params(binding, settings, cp)
            ctx = binding.llama_init_from_model(handle, cparams)
            if not ctx:
                raise HarnessError(f"llama.cpp could not create a context: {_last_error(lines)}")
            binding.llama_free(ctx)  # its destructor logs the compute buffers to 4 decimals
        finally:
            binding.llama_model_free(handle)
    if progress is not None:
        for line in lines:
            progress(line)
    return _parse(lines)


def measure_server(
    path: str | Path,
    argv: Sequence[str] = (),
    *,
    binary: str | Path | None = None,
    timeout: float = 300.0,
    on_ready: Callable[[int], object] | None = None,
) -> Measured:
    """Start llama-server on ``path`` with ``argv`` exactly as given, and report the buffers it
    prints while loading: the truth for what a deployed server allocates, defaults included.

    ``--no-warmup`` (no inference: a sparse file's holes are never read) and ``-lv 4`` (the
    buffer lines are debug output) come first, so ``argv`` may override neither by accident; the
    server is stopped as soon as it listens (after ``on_ready(pid)``, e.g. to read its VRAM).
    """
    import socket
    import subprocess
    import tempfile
    import time

    if binary is None:
        from harness.toolchain import program

        binary = program("llama-server")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [str(binary), "--no-warmup", "-lv", "4", "-t", "1", "-m", str(path), *argv]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout
        try:
            while process.poll() is None and time.monotonic() < deadline:
                log.seek(0)
                if "llama_server: listening on" in log.read():
                    if on_ready is not None:
                        on_ready(process.pid)
                    break
                time.sleep(0.05)
        finally:
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.seek(0)
        lines = log.read().splitlines()
    measured = _parse(lines)
    if not measured.weights:
        raise HarnessError(f"llama-server did not load {path}: {_last_error(lines)}")
    return measured


def _context_params(binding: Any, s: RunSettings, cp: Any) -> Any:
    params = binding.llama_context_default_params()
    params.n_ctx = s.ctx_size or 0
    params.n_batch = cp.n_batch
    params.n_ubatch = cp.n_ubatch
    params.n_seq_max = cp.n_seq_max
    params.n_outputs_max = cp.n_outputs_max
    params.n_outputs_max_per_seq = 1
    params.n_threads = 1
    params.n_threads_batch = 1
    params.flash_attn_type = _FLASH[s.flash_attn]
    params.type_k = _GGML_TYPES[cp.type_k.lower()]
    params.type_v = _GGML_TYPES[cp.type_v.lower()]
    params.offload_kqv = cp.offload_kqv
    params.embeddings = cp.embeddings
    params.pooling_type = s.pooling_type
    params.swa_full = cp.swa_full
    params.kv_unified = cp.kv_unified
    return params


def _parse(lines: list[str]) -> Measured:
    found: dict[str, dict[str, int]] = {key: {} for key in _LINES}
    figures: dict[str, int] = {}
    fallback: dict[str, int] = {}
    for line in lines:
        for key, pattern in _LINES.items():
            match = pattern.search(line)
            if match:
                bucket = "kv_cache" if key == "recurrent" else key
                figures[bucket] = figures.get(bucket, 0) + 1
                name = match[1]
                found[bucket][name] = found[bucket].get(name, 0) + round(float(match[2]) * _MIB)
        match = _COMPUTE_FALLBACK.search(line)
        if match:
            fallback[match[1]] = round(float(match[2]) * _MIB)
    return Measured(
        weights=found["weights"],
        output=found["output"],
        kv_cache=found["kv_cache"],
        compute=found["compute"] or fallback,
        log=tuple(lines),
        figures=figures,
    )


def _last_error(lines: list[str]) -> str:
    for line in reversed(lines):
        if "error" in line.lower() or "failed" in line.lower():
            return line.strip()
    return "see the log"


@contextmanager
def _captured(binding: Any, lines: list[str]) -> Iterator[None]:
    pending: list[str] = []

    def receive(_level: int, text: bytes | None, _user: object) -> None:
        if not text:
            return
        pending.append(text.decode("utf-8", "replace"))
        joined = "".join(pending)
        if "\n" in joined:
            *complete, rest = joined.split("\n")
            lines.extend(complete)
            pending[:] = [rest] if rest else []

    callback = binding.llama_log_callback(receive)
    previous = binding.llama_log_callback()
    previous_data = ctypes.c_void_p()
    binding.llama_log_get(ctypes.byref(previous), ctypes.byref(previous_data))
    binding.llama_log_set(callback, None)
    try:
        yield
    finally:
        binding.llama_log_set(previous, previous_data)
        if pending:
            lines.append("".join(pending))
