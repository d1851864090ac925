"""CONVERT: a Hugging Face safetensors directory (or PEFT LoRA adapter) to one GGUF file.

Runs llama.cpp's own ``convert_hf_to_gguf.py`` / ``convert_lora_to_gguf.py`` from the commit the
runtime was built from, in a child process, exactly as gguf-packer's CONVERT does.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from pathlib import Path
from typing import Literal

from harness._fs import ensure_room, staged_output
from harness._progress import Progress as Bar
from harness._progress import progress as harness_progress
from harness.errors import ToolchainError

from ._llama import Progress, converter_dir
from ._process import error_line, run_tool
from ._room import convert_floor

__all__ = ["CONVERT_CLASSES", "CONVERT_TYPES", "convert"]

#: ``CONVERT --type`` values and the converter's ``--outtype`` for each: gguf-packer's four, plus
#: the ternary types this commit's converter also writes.
CONVERT_TYPES: dict[str, str] = {
    "F32": "f32",
    "F16": "f16",
    "BF16": "bf16",
    "Q8_0": "q8_0",
    "TQ1_0": "tq1_0",
    "TQ2_0": "tq2_0",
}
CONVERT_CLASSES = ("model", "lora")
# gguf-py's GGUFWriter logs the bytes it will write in decimal units, 3 digits.
_TOTAL_SIZE = re.compile(r"total_size = ([\d.]+)([KMGT]?)\b")
_SI = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}

# The converter must never reach for the Hugging Face hub: a file missing from the local directory
# is an error to report, not something to download (and CI has no route to the hub anyway).
_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def convert(
    model_dir: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    out_type: str = "F16",
    cls: Literal["model", "lora"] = "model",
    base: str | os.PathLike[str] | None = None,
    model_name: str | None = None,
    python: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> Path:
    """Convert ``model_dir`` into the GGUF file ``dest`` and return ``dest``.

    ``cls="lora"`` converts a PEFT adapter and needs ``base``, the base model's directory (only
    its config is read). ``model_name`` sets ``general.name``, which the converter otherwise
    derives from the directory's name. The file appears at ``dest`` only when the converter
    succeeded; on failure or interruption nothing is left behind.
    """
    source = Path(model_dir)
    target = Path(dest)
    outtype = _outtype(out_type)
    if cls not in CONVERT_CLASSES:
        raise ToolchainError(f"unknown CONVERT class {cls!r}: expected model or lora")
    if cls == "lora" and base is None:
        raise ToolchainError.at(source, "converting a LoRA adapter needs the base model (--base)")
    if cls == "model" and base is not None:
        raise ToolchainError.at(source, "--base only applies to --class=lora")
    if cls == "lora" and model_name is not None:
        raise ToolchainError.at(source, "the LoRA converter takes no model name")

    # Refused before the converter starts: it would find a full disk only at its failed write.
    ensure_room(target.parent, convert_floor(source, outtype), f"CONVERT --outtype {outtype}")
    scripts = converter_dir(progress=progress)
    script = scripts / ("convert_lora_to_gguf.py" if cls == "lora" else "convert_hf_to_gguf.py")
    command = [str(python or sys.executable), str(script), str(source), "--outtype", outtype]
    if base is not None:
        command += ["--base", str(base)]
    if model_name is not None:
        command += ["--model-name", model_name]
    with staged_output(target) as tmp, _Written(tmp, f"CONVERT {outtype}", progress) as lines:
        run = run_tool([*command, "--outfile", str(tmp)], env=_environment(scripts), progress=lines)
        if run.returncode != 0:
            raise ToolchainError.at(
                source, f"{script.name} failed: {error_line(run.tail)}", detail=run.tail
            )
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise ToolchainError.at(source, f"{script.name} wrote nothing", detail=run.tail)
    return target


def _outtype(out_type: str) -> str:
    outtype = CONVERT_TYPES.get(out_type.upper())
    if outtype is None:
        choices = ", ".join(CONVERT_TYPES)
        raise ToolchainError(f"unknown CONVERT type {out_type!r}: expected one of {choices}")
    return outtype


def _environment(scripts: Path) -> dict[str, str]:
    env = dict(os.environ)
    # The vendored gguf-py goes first: the PyPI gguf release lags the converter and lacks the
    # constants it needs. The scripts insert it too, unless NO_LOCAL_GGUF is set: drop that.
    env.pop("NO_LOCAL_GGUF", None)
    paths = [str(scripts / "gguf-py"), str(scripts)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(_OFFLINE_ENV)
    env["PYTHONUNBUFFERED"] = "1"
    # tqdm's redrawn progress bar would fill the captured log with carriage returns
    env["TQDM_DISABLE"] = "1"
    return env


class _Written:
    """The converter prints nothing while it writes a model (minutes for a big one): once it
    names the tensor bytes it will write (``total_size = 15.2G``), the bar follows its output
    file's size, read every half second."""

    def __init__(self, path: Path, step: str, forward: Progress | None) -> None:
        self.path, self.step, self.forward = path, step, forward
        self._stack = contextlib.ExitStack()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar: Bar | None = None

    def __enter__(self) -> _Written:
        return self

    def __call__(self, line: str) -> None:
        found = _TOTAL_SIZE.search(line)
        if found is not None and self._thread is None:
            total = int(float(found[1]) * _SI.get(found[2], 1))
            bar = self._stack.enter_context(harness_progress(self.step, total))
            self._bar = bar
            self._thread = threading.Thread(target=self._follow, args=(bar,), daemon=True)
            self._thread.start()
        if self.forward is not None:
            self.forward(line)

    def _follow(self, bar: Bar) -> None:
        while not self._stop.wait(0.5):
            self._read(bar)

    def _read(self, bar: Bar) -> None:
        with contextlib.suppress(OSError):
            bar.update(self.path.stat().st_size)

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread is not None and self._bar is not None:
            self._thread.join()
            self._read(self._bar)  # the whole file, not its size at the last look
        self._stack.close()
