"""QUANTIZE: one GGUF file to another quantization type, with llama.cpp's own quantizer.

Through llama.cpp's own ``llama-quantize`` by default: the toolchain's build, or the binary given
or configured with ``$GGUF_HARNESS_LLAMA_QUANTIZE``. ``$GGUF_HARNESS_LLAMA_QUANTIZE=in-process``
(or a toolchain not built yet) calls ``llama_model_quantize`` instead, what ``llama-quantize``
calls, with the same output bytes (tests/test_toolchain_quantize.py), in a child Python process or
in this one. Either way the result is written beside ``dest`` and renamed into place only on
success.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from harness._fs import ensure_room, staged_output
from harness._progress import Progress as Bar
from harness._progress import progress as harness_progress
from harness.errors import ToolchainError

from ._inprocess import quantize_in_process
from ._llama import Progress
from ._process import error_line, run_tool
from ._programs import find_programs
from ._qtypes import GGML_TYPE_NAMES, QuantizeOptions, quantize_options
from ._room import model_headers, quantize_floor

__all__ = [
    "QUANTIZE_BINARY_ENV",
    "quantize",
    "quantize_command",
]

QUANTIZE_BINARY_ENV = "GGUF_HARNESS_LLAMA_QUANTIZE"
IN_PROCESS = "in-process"
_TENSOR_LINE = re.compile(r"\[\s*\d+/\s*\d+\]\s+(\S+)\s+-")


def quantize(
    src: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    type: str,
    imatrix: str | os.PathLike[str] | None = None,
    imatrix_label: str | None = None,
    include_weights: Sequence[str] = (),
    exclude_weights: Sequence[str] = (),
    pure: bool = False,
    leave_output_tensor: bool = False,
    output_tensor_type: str | None = None,
    token_embedding_type: str | None = None,
    allow_requantize: bool = False,
    nthread: int | None = None,
    binary: str | os.PathLike[str] | None = None,
    isolated: bool = True,
    progress: Progress | None = None,
) -> Path:
    """Quantize the GGUF file ``src`` to ``type`` into ``dest`` and return ``dest``.

    Flags mirror gguf-packer's QUANTIZE (and llama-quantize's): type names are case-insensitive.
    ``include_weights`` / ``exclude_weights`` filter the imatrix by tensor-name substring and
    need ``imatrix``. ``imatrix_label`` is the name recorded as ``quantize.imatrix.file``
    (default: the path as given, as llama-quantize records it; a build that reads the imatrix
    from a scratch or cache path passes the Packerfile's name so the output stays reproducible).
    ``nthread=None`` uses every core.

    Without a binary, llama.cpp's ``llama_model_quantize`` runs in a child Python process
    (``isolated``, the default: Ctrl-C stops it at once and a llama.cpp abort becomes a
    ToolchainError) or, with ``isolated=False``, in this process (no start-up cost, for tests
    and tiny models).
    """
    options = quantize_options(
        type,
        imatrix=imatrix,
        imatrix_label=imatrix_label,
        include_weights=include_weights,
        exclude_weights=exclude_weights,
        pure=pure,
        leave_output_tensor=leave_output_tensor,
        output_tensor_type=output_tensor_type,
        token_embedding_type=token_embedding_type,
        allow_requantize=allow_requantize,
        nthread=nthread,
    )
    source = Path(src)
    target = Path(dest)
    # llama-quantize records the imatrix path it was given; a label needs the library call.
    tool = _binary(binary) if options.imatrix_label is None else None
    headers = model_headers(source)
    # Refused before the tool starts (it would find a full disk only at its failed write).
    ensure_room(target.parent, quantize_floor(headers, options.type), f"QUANTIZE {options.type}")
    sizes = {t.name: t.n_bytes for header in headers for t in header.tensors}
    with (
        staged_output(target) as tmp,
        harness_progress(f"QUANTIZE {options.type}", sum(sizes.values())) as bar,
    ):
        # Each tensor's line comes once it is written: the source's bytes done so far.
        lines = _TensorLines(bar, sizes, progress)
        if tool is None and isolated:
            _quantize_in_child(source, tmp, options, lines)
        elif tool is None:
            quantize_in_process(source, tmp, options, lines)
        else:
            _quantize_with_binary(tool, source, tmp, options, lines)
    return target


class _TensorLines:
    """llama-quantize's ``[  12/ 291] blk.1.attn_q.weight - ...`` lines as a bar's bytes."""

    def __init__(self, bar: Bar, sizes: dict[str, int], forward: Progress | None) -> None:
        self.bar, self.sizes, self.forward = bar, sizes, forward

    def __call__(self, line: str) -> None:
        found = _TENSOR_LINE.match(line)
        if found is not None:
            self.bar.advance(self.sizes.get(found[1], 0))
        if self.forward is not None:
            self.forward(line)


def _binary(binary: str | os.PathLike[str] | None) -> Path | None:
    configured = binary if binary is not None else os.environ.get(QUANTIZE_BINARY_ENV) or None
    if configured == IN_PROCESS:
        return None
    if configured is None:
        built = find_programs()
        return built.path("llama-quantize") if built is not None else None
    found = shutil.which(os.fspath(configured))
    if found is None:
        raise ToolchainError.at(
            os.fspath(configured), "llama-quantize binary not found or not executable"
        )
    return Path(found)


# -- in a child process ----------------------------------------------------------------------


def _quantize_in_child(
    source: Path, out: Path, options: QuantizeOptions, progress: Progress | None
) -> None:
    from . import _worker

    def forward(line: str) -> None:
        if progress is not None and not line.startswith(_worker.ERROR_MARK):
            progress(line)

    command = [sys.executable, "-m", _worker.__name__, _worker.request(source, out, options)]
    run = run_tool(command, env=_child_environment(), progress=forward)
    if run.returncode == 0:
        return
    lines = run.tail.splitlines()
    marked = [line for line in lines if line.startswith(_worker.ERROR_MARK)]
    detail = "\n".join(line for line in lines if not line.startswith(_worker.ERROR_MARK))
    if marked:
        message, where = _worker.reported_error(marked[-1])
        raise ToolchainError.at(where or source, message, detail=detail)
    if run.returncode < 0:
        message = (
            f"quantizing to {options.type} crashed (signal {-run.returncode}): {error_line(detail)}"
        )
    else:
        message = (
            f"quantizing to {options.type} failed (exit {run.returncode}): {error_line(detail)}"
        )
    raise ToolchainError.at(source, message, detail=detail)


def _child_environment() -> dict[str, str]:
    # the child imports this package: make it importable even from an uninstalled checkout
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


# -- binary ------------------------------------------------------------------------------------


def _quantize_with_binary(
    tool: Path, source: Path, out: Path, options: QuantizeOptions, progress: Progress | None
) -> None:
    run = run_tool(quantize_command(tool, source, out, options), progress=progress)
    if run.returncode != 0:
        reason = next(
            (
                line.split("failed to quantize:", 1)[1].strip()
                for line in reversed(run.tail.splitlines())
                if "failed to quantize:" in line
            ),
            None,
        )
        raise ToolchainError.at(
            source,
            f"{tool.name} to {options.type} failed: {reason or error_line(run.tail)}",
            detail=run.tail,
        )


def quantize_command(tool: Path, source: Path, out: Path, options: QuantizeOptions) -> list[str]:
    """The llama-quantize command line for ``options``, flags first as it requires."""
    command = [str(tool)]
    if options.allow_requantize:
        command.append("--allow-requantize")
    if options.leave_output_tensor:
        command.append("--leave-output-tensor")
    if options.pure:
        command.append("--pure")
    if options.imatrix is not None:
        command += ["--imatrix", os.fspath(options.imatrix)]
    for name in options.include_weights:
        command += ["--include-weights", name]
    for name in options.exclude_weights:
        command += ["--exclude-weights", name]
    if options.output_tensor_type is not None:
        command += ["--output-tensor-type", GGML_TYPE_NAMES[options.output_tensor_type]]
    if options.token_embedding_type is not None:
        command += ["--token-embedding-type", GGML_TYPE_NAMES[options.token_embedding_type]]
    command += [os.fspath(source), os.fspath(out), options.type]
    if options.nthread:
        command.append(str(options.nthread))
    return command
