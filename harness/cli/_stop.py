"""A person's stop during a push: the first SIGINT or SIGTERM lets each upload finish the chunk
in flight and journal its session (the next run resumes there), and the command exits 128 +
the signal with one line; a second signal stops at once.

The handlers are installed here, in the faces (``gguf-harness push``, the pytest plugin around
``--publish``), and only while a push runs; the core offers ``request_stop`` and nothing else.
``gguf-harness test`` runs pytest as a child: it passes each signal on (``wait_passing``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # main() imports this module for every command: nothing more at start-up
    import subprocess

__all__ = ["Interrupted", "StopRequest", "graceful_stop", "wait_passing"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# A signal that reaches `gguf-harness test` and its pytest child both (a process group's kill,
# `timeout`) reaches the child twice, once passed on: as one signal, not a second one.
_SAME_SIGNAL_S = 0.5


class Interrupted(BaseException):
    """A second signal: stop now (raised in the main thread, past every ``except Exception``)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.status = 128 + signum


@dataclass
class StopRequest:
    """The signal that asked for a stop, if one did."""

    signum: int | None = None
    at: float = 0.0

    @property
    def status(self) -> int:
        return 128 + (self.signum or 0)


@contextlib.contextmanager
def graceful_stop() -> Iterator[StopRequest]:
    """While the block runs, SIGINT and SIGTERM ask the uploads to stop between chunks."""
    import threading

    from harness.distribution import clear_stop, request_stop  # not for `test`'s parent

    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request  # Python delivers signals to the main thread only
        return

    def handler(signum: int, _frame: object) -> None:
        now = time.monotonic()
        if request.signum is None:
            request.signum, request.at = signum, now
            request_stop()
            # os.write: print() from a handler can meet the main thread inside print().
            note = "stopping after the chunk in flight (signal again to stop at once)"
            os.write(2, f"gguf-harness: {note}\n".encode())
            return
        if signum == request.signum and now - request.at < _SAME_SIGNAL_S:
            return
        request_stop(now=True)
        raise Interrupted(signum)

    previous = {signum: signal.signal(signum, handler) for signum in _SIGNALS}
    try:
        yield request
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
        clear_stop()


def wait_passing(child: subprocess.Popen[bytes]) -> int:
    """Wait for ``child``, passing SIGINT and SIGTERM on to it; its exit status (128 + signal
    for one that killed it)."""

    def handler(signum: int, _frame: object) -> None:
        if signum == signal.SIGINT and _terminal_group():
            return  # a Ctrl-C at the terminal reached the child already
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    previous = {signum: signal.signal(signum, handler) for signum in _SIGNALS}
    try:
        code = child.wait()
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
    return 128 - code if code < 0 else code


def _terminal_group() -> bool:
    """Whether this process's group is its terminal's foreground group (a Ctrl-C reaches all)."""
    for stream in (sys.stdin, sys.stderr, sys.stdout):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            if stream.isatty():
                return os.tcgetpgrp(stream.fileno()) == os.getpgrp()
    return False
