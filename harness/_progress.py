"""Progress of long byte-moving steps (a push, a pull, a layer written) that people can read.

    with progress("pull 3f2a9c1e2b4d", total=size) as bar:
        bar.advance(len(piece))

On a terminal (stderr a tty, ``CI`` unset) a live rich bar with bytes, rate and ETA; rich is
imported only then, so a command that shows no bar never loads it. Otherwise (CI logs, a pipe) a
plain line on stderr every ``interval`` seconds and one at the end:

    gguf-harness: pull 3f2a9c1e2b4d: 1.21 GiB of 3.53 GiB (34%), 412.50 MiB/s, ETA 6 s
    gguf-harness: pull 3f2a9c1e2b4d: 3.53 GiB in 8.8 s, 410.93 MiB/s

Steps smaller than ``min_total`` bytes (configs, manifests) show nothing; ``configure(quiet=True)``
(the CLI's ``--quiet``) silences everything. Bars are safe to advance from several threads (blobs
transferred in parallel each have their own).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from harness.units import format_size

__all__ = ["Progress", "configure", "progress"]


@dataclass
class _Settings:
    quiet: bool = False
    interval: float = 5.0  # seconds between plain lines
    min_total: int = 32 << 20  # smaller steps are over before anyone reads a bar


_settings = _Settings()
_lock = threading.Lock()
_live: list[Any] = []  # the one rich Progress shown while any bar is open, and its users
_users = 0


def configure(
    *, quiet: bool | None = None, interval: float | None = None, min_total: int | None = None
) -> None:
    """Process-wide: ``quiet`` silences every bar; ``interval`` and ``min_total`` as above."""
    if quiet is not None:
        _settings.quiet = quiet
    if interval is not None:
        _settings.interval = interval
    if min_total is not None:
        _settings.min_total = min_total


def _plain() -> bool:
    """Plain lines in CI logs and pipes; a live bar only for a person at a terminal."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return True
    try:
        return not sys.stderr.isatty()
    except (AttributeError, ValueError):
        return True


class Progress:
    """One step's bytes: ``advance`` by a count, or ``update`` to an absolute figure (a transfer
    that starts over)."""

    def __init__(self, step: str, total: int | None) -> None:
        self.step = step
        self.total = total
        self.done = 0
        self._started = time.monotonic()
        self._lock = threading.Lock()

    def advance(self, count: int) -> None:
        with self._lock:
            self.done += count
            self._show()

    def update(self, done: int) -> None:
        with self._lock:
            self.done = done
            self._show()

    def _show(self) -> None:
        pass

    def _finish(self, ok: bool) -> None:
        pass

    def rate(self) -> float:
        return self.done / max(time.monotonic() - self._started, 1e-6)


class _Lines(Progress):
    def __init__(self, step: str, total: int | None) -> None:
        super().__init__(step, total)
        self._last = self._started

    def _show(self) -> None:
        now = time.monotonic()
        if now - self._last < _settings.interval:
            return
        self._last = now
        rate = self.rate()
        if self.total:
            left = max(self.total - self.done, 0)
            eta = f", ETA {left / rate:.0f} s" if rate > 0 else ""
            share = f" of {format_size(self.total)} ({100 * self.done // self.total}%)"
        else:
            eta = share = ""
        _line(f"{self.step}: {format_size(self.done)}{share}, {format_size(int(rate))}/s{eta}")

    def _finish(self, ok: bool) -> None:
        seconds = time.monotonic() - self._started
        state = "" if ok else " (stopped)"
        rate = format_size(int(self.rate()))
        _line(f"{self.step}: {format_size(self.done)} in {seconds:.1f} s, {rate}/s{state}")


class _Bar(Progress):
    def __init__(self, step: str, total: int | None) -> None:
        super().__init__(step, total)
        self._live = _open_live()
        self._task = self._live.add_task(step, total=total)

    def _show(self) -> None:
        self._live.update(self._task, completed=self.done)

    def _finish(self, ok: bool) -> None:
        self._live.update(self._task, completed=self.done)
        _close_live()


def _line(text: str) -> None:
    print(f"gguf-harness: {text}", file=sys.stderr, flush=True)


def _open_live() -> Any:
    global _users
    with _lock:
        if not _live:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )
            from rich.progress import Progress as RichProgress

            live = RichProgress(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                TransferSpeedColumn(), TimeRemainingColumn(),
                console=Console(stderr=True), transient=False,
            )  # fmt: skip
            live.start()
            _live.append(live)
        _users += 1
        return _live[0]


def _close_live() -> None:
    global _users
    with _lock:
        _users -= 1
        if _users == 0 and _live:
            _live.pop().stop()


@contextmanager
def progress(step: str, total: int | None = None) -> Iterator[Progress]:
    """A bar for ``step`` (``total`` bytes, None if unknown) while the block runs."""
    if _settings.quiet or (total is not None and total < _settings.min_total):
        yield Progress(step, total)  # counts, shows nothing
        return
    shown: Progress = _Lines(step, total) if _plain() else _Bar(step, total)
    ok = False
    try:
        yield shown
        ok = True
    finally:
        shown._finish(ok)
