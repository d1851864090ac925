"""What a server's log says: llama.cpp's load facts, per-request timings, and its errors.

llama-server and llama-cpp-python both print llama.cpp's own lines (``llama_context: n_ctx``,
``... buffer size = N MiB``); the llama-cpp-python wrapper adds ``gguf-harness-timings`` lines.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._records import Timings

__all__ = ["load_facts", "log_tail", "logged_timings", "server_error", "timings_from"]

_TIMINGS_LINE = re.compile(r"^gguf-harness-timings (\{.*\})$", re.MULTILINE)
# llama-server puts "0.00.505.900 I " before each line; llama-cpp-python prints them bare.
_PREFIX = r"^(?:[\d.]+ [A-Z] )?"
_BUFFER_LINE = re.compile(
    _PREFIX + r"\w+:\s+(\S+(?: +\S+)*?)\s+buffer size =\s+([\d.]+) MiB", re.MULTILINE
)
_N_CTX_LINE = re.compile(_PREFIX + r"llama_context: n_ctx\s+=\s+(\d+)", re.MULTILINE)
# Most telling first: llama.cpp's own load errors, then an error line the server wrote itself,
# then a Python exception (a traceback's last line), then any line that says error or crash.
_ERROR_PATTERNS = (
    re.compile(
        r"error loading model|failed to load model|gguf_init_from_file.*failed|invalid magic", re.I
    ),
    re.compile(r"^error: |^\w+: error: "),
    re.compile(r"^[\w.]*(Error|Exception): "),
    re.compile(r"\berror\b|Segmentation fault|Aborted|Fatal", re.I),
)


def read_log(path: Path, since: int = 0) -> str:
    try:
        with path.open("rb") as file:
            file.seek(since)
            return file.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def log_tail(path: Path, lines: int = 40, since: int = 0, limit: int = 8000) -> str:
    """The last ``lines`` lines of the log written after byte ``since``, at most ``limit``
    characters."""
    text = read_log(path, since).rstrip("\n")
    tail = "\n".join(text.splitlines()[-lines:])
    return tail if len(tail) <= limit else "..." + tail[-limit:]


def server_error(log: str) -> str | None:
    """The line of a server log that says what went wrong, if one does."""
    lines = [re.sub(_PREFIX, "", line).strip() for line in log.splitlines() if line.strip()]
    for pattern in _ERROR_PATTERNS:
        for line in lines:
            if pattern.search(line):
                return line[:400]
    return None


def timings_from(value: Any) -> Timings | None:
    """A llama-server ``timings`` object (or the wrapper's line) as a record."""
    if not isinstance(value, dict):
        return None
    try:
        return Timings(
            int(value.get("prompt_n", 0)),
            float(value.get("prompt_ms", 0.0)),
            int(value.get("predicted_n", 0)),
            float(value.get("predicted_ms", 0.0)),
        )
    except (TypeError, ValueError):
        return None


def logged_timings(path: Path, since: int) -> Timings | None:
    found = _TIMINGS_LINE.findall(read_log(path, since))
    return timings_from(json.loads(found[-1])) if found else None


def load_facts(log: str) -> tuple[int | None, Mapping[str, float]]:
    """The context llama.cpp created and its buffer sizes (MiB by name: "CPU KV"...)."""
    contexts = _N_CTX_LINE.findall(log)
    buffers = {" ".join(name.split()): float(size) for name, size in _BUFFER_LINE.findall(log)}
    return (int(contexts[-1]) if contexts else None), buffers
