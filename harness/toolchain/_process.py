"""Run one llama.cpp tool as a child process: stream its log, keep its tail, never orphan it."""

from __future__ import annotations

import collections
import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ._llama import Progress

__all__ = ["ToolRun", "error_line", "run_tool"]

_TAIL_LINES = 40
_KILL_GRACE_S = 5.0
# A Python traceback ends in "SomeError: message"; llama.cpp's scripts log "ERROR:name:message".
_PY_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*")
_LOG_PREFIX = re.compile(r"^(ERROR|CRITICAL):[\w.-]+:")


@dataclass(frozen=True)
class ToolRun:
    returncode: int
    tail: str  # the last lines of the merged stdout/stderr


def run_tool(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> ToolRun:
    """Run ``command`` to completion, passing each output line to ``progress``.

    On any exception in the caller's thread (Ctrl-C above all) the child and its process group
    are killed before the exception propagates, so no converter keeps writing after we gave up.
    """
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    process = subprocess.Popen(
        list(command),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(env) if env is not None else None,
        # own process group: the terminal's Ctrl-C reaches only us, and we decide the kill
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        for raw in process.stdout:
            # tqdm redraws with \r; keep the last state of each redrawn line
            line = raw.decode("utf-8", "replace").rstrip("\r\n").rsplit("\r", 1)[-1].rstrip()
            if not line:
                continue
            tail.append(line)
            if progress is not None:
                progress(line)
        returncode = process.wait()
    except BaseException:
        _kill(process)
        raise
    finally:
        if process.stdout is not None:
            process.stdout.close()
    return ToolRun(returncode, "\n".join(tail))


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, AttributeError):
        process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=_KILL_GRACE_S)


def error_line(tail: str) -> str:
    """The one line of a tool's log that best says why it failed."""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    for line in reversed(lines):
        if _PY_EXCEPTION.match(line):
            return line
    for line in reversed(lines):
        if _LOG_PREFIX.match(line):
            return _LOG_PREFIX.sub("", line).strip()
    for line in reversed(lines):
        if "error" in line.lower():
            return line
    return lines[-1] if lines else "no output"
