"""A server process in a process group of its own, its log on disk, and its certain end.

The process gets a new session, so Ctrl-C in a terminal reaches only the harness, which then
stops the whole group itself (a SIGINT racing into the server mid-load would leave a half-dead
llama.cpp). Stopping sends SIGTERM to the group, waits, then SIGKILLs the group and any
descendant that left it. Every process still running is also stopped when the interpreter exits.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from ._memory import descendants

__all__ = ["ServerProcess", "free_port"]

_STOP_GRACE = 5.0
# Strong references: a Server dropped without stop() must still be stopped at exit.
_LIVE: set[ServerProcess] = set()
_LIVE_LOCK = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (a server that loses the race fails its start
    with "address in use" in its log)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """One started server process; ``stop()`` is idempotent and safe from any thread."""

    def __init__(
        self, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.argv = tuple(argv)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # A signal between the fork and the registration below would leave a server nobody
        # stops (Ctrl-C or `kill` of `gguf-harness run` while it starts): hold them off until
        # the process is known; they arrive right after.
        with _signals_held(), log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=dict(env) if env is not None else None,
                # the child inherits the held mask across exec: give it back its signals
                preexec_fn=_release_signals,
            )
            self.pid = self._popen.pid
            with _LIVE_LOCK:
                _LIVE.add(self)

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def alive(self) -> bool:
        return self._popen.poll() is None

    def send(self, signum: int) -> None:
        """Pass a signal on to the server's whole process group (``gguf-harness run``)."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signum)

    def stop(self, grace: float = _STOP_GRACE) -> int | None:
        """End the process and everything it started, giving it ``grace`` seconds after
        SIGTERM before SIGKILL; return its exit status."""
        with self._lock:
            tree = [(pid, _started(pid)) for pid in descendants(self.pid)] if self.alive() else []
            if self.alive():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._popen.wait(grace)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            # Children that made a group of their own are not reached by killpg; a pid is
            # killed only while it is still the process seen before (same start time).
            for pid, started in tree[1:]:
                if started is not None and _started(pid) == started:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
            self._popen.wait()
            with _LIVE_LOCK:
                _LIVE.discard(self)
            return self._popen.returncode


_HELD = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # Python runs signal handlers in the main thread only
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _release_signals() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD)


def _started(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None  # starttime, field 22 of stat


@atexit.register
def _stop_all() -> None:
    with _LIVE_LOCK:
        live = list(_LIVE)
    for process in live:
        process.stop()
