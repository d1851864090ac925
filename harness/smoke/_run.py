"""Starting a server, and one model's smoke run in one call: start, check, measure, stop.

A server that does not start fails every check with its own error rather than raising: each
check is an item of its own, and each must say why it failed.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import SmokeError

from ._checks import SmokeCheck, run_check
from ._command import ServerCommand
from ._records import RunMeasurements, SmokeResult
from ._runners import Launch, Runner, runner_for
from ._server import Server

__all__ = ["SmokeRun", "dry_run", "smoke", "start"]


@dataclass(frozen=True)
class SmokeRun:
    results: tuple[SmokeResult, ...]
    measurements: RunMeasurements | None  # None when the server never became healthy
    command_line: str | None  # what was started
    log_path: Path | None
    error: SmokeError | None = None  # why the server did not start

    @property
    def passed(self) -> bool:
        return self.error is None and all(r.passed for r in self.results)


def dry_run(
    command: ServerCommand,
    runner: Runner | str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    threads: int | None = None,
) -> Launch:
    """The launch ``start`` would make, without starting anything (``launch.command_line``)."""
    chosen = runner if not isinstance(runner, str | None) else runner_for(runner)
    return chosen.launch(_threaded(command, threads), host, port, Path(tempfile.gettempdir()))


def start(
    command: ServerCommand,
    runner: Runner | str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    ready_timeout: float = 120.0,
    log_dir: Path | None = None,
    threads: int | None = None,
) -> Server:
    """Start ``command`` with ``runner`` (a Runner, a name, or None: configured/automatic) and
    return it healthy. ``threads`` adds ``-t N -tb N`` (1 in CI: deterministic and fastest on
    a busy machine). The log is kept in ``log_dir`` (default: a new temporary directory)."""
    chosen = runner if not isinstance(runner, str | None) else runner_for(runner)
    chosen.check()
    directory = log_dir or Path(tempfile.mkdtemp(prefix="gguf-harness-smoke-"))
    server = Server(_threaded(command, threads), chosen, host, port, ready_timeout, directory)
    server.boot()
    return server


def _threaded(command: ServerCommand, threads: int | None) -> ServerCommand:
    if threads is None:
        return command
    return command.with_args(["-t", str(threads), "-tb", str(threads)])


def smoke(
    command: ServerCommand,
    checks: Sequence[SmokeCheck],
    runner: Runner | str | None = None,
    **options: Any,
) -> SmokeRun:
    """Run ``checks`` against ``command`` (``options`` go to ``start``); the server is stopped
    before this returns, whatever happens (KeyboardInterrupt still propagates)."""
    began = time.perf_counter()
    try:
        server = start(command, runner, **options)
    except SmokeError as error:
        seconds = time.perf_counter() - began
        failed = tuple(
            SmokeResult(
                check.name,
                check.kind,
                False,
                f"{check.name}: the server did not start: {error}",
                None,
                {},
                (),
                seconds,
                error=str(error),
                log_tail=error.log_tail,
                location=check.location,
            )
            for check in checks
        )
        return SmokeRun(failed, None, None, None, error)
    with server:
        results = tuple(run_check(server, check) for check in checks)
    launch = server.launch
    return SmokeRun(
        results,
        server.measurements(),
        launch.command_line if launch else None,
        server.log_path,
    )
