"""Child process for an isolated in-process quantization.

llama.cpp stops the whole process on an internal assertion (GGML_ABORT), and a C call cannot be
interrupted by Ctrl-C until it returns: a model quantized in a child process turns the first into
a ToolchainError and lets the second kill the child at once. Invoked by ``quantize`` as
``python -m harness.toolchain._worker '<json>'``; prints llama.cpp's log on stdout and, on a
reported failure, one last line starting with ``ERROR_MARK``.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from harness.errors import ToolchainError

from ._inprocess import quantize_in_process
from ._qtypes import QuantizeOptions

__all__ = ["ERROR_MARK", "main", "reported_error", "request"]

ERROR_MARK = "gguf-harness-toolchain-error: "


def request(source: Path, out: Path, options: QuantizeOptions) -> str:
    """The JSON argument that asks the worker for one quantization."""
    data: dict[str, Any] = asdict(options)
    data["imatrix"] = os.fspath(options.imatrix) if options.imatrix is not None else None
    return json.dumps({"source": os.fspath(source), "out": os.fspath(out), "options": data})


def reported_error(line: str) -> tuple[str, str | None]:
    """The message and file of the error a worker reported on ``line`` (an ERROR_MARK line)."""
    data = json.loads(line.removeprefix(ERROR_MARK))
    return str(data["message"]), data.get("path")


def _options(data: dict[str, Any]) -> QuantizeOptions:
    known = {f.name for f in fields(QuantizeOptions)}
    values = {k: v for k, v in data.items() if k in known}
    for key in ("include_weights", "exclude_weights"):
        values[key] = tuple(values.get(key, ()))
    if values.get("imatrix") is not None:
        values["imatrix"] = Path(values["imatrix"])
    return QuantizeOptions(**values)


def main(argv: list[str]) -> int:
    job = json.loads(argv[0])

    def show(line: str) -> None:
        print(line, flush=True)

    try:
        quantize_in_process(Path(job["source"]), Path(job["out"]), _options(job["options"]), show)
    except ToolchainError as error:
        where = error.location.path if error.location is not None else None
        print(ERROR_MARK + json.dumps({"message": error.message, "path": where}), flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
