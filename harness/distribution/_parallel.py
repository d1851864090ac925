"""Several blobs at once, in a bounded pool: results in the order of the items.

When one item fails (or Ctrl-C reaches the caller), the others are told to stop: the transfer
loops ask ``stop_point()`` between pieces and give up within a megabyte, so the error is raised
once every worker has ended, with nothing still writing into what the caller cleans up. One item
runs in the calling thread.

A person's stop is process-wide: ``request_stop()`` (the CLI's first SIGINT or SIGTERM) asks
each upload to end at its next chunk boundary, the chunk in flight acknowledged and journaled;
``request_stop(now=True)`` (a second signal) makes every ``stop_point()`` raise. Nothing here
installs a signal handler: the faces (CLI, pytest plugin) do, around a push.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import TypeVar

from harness.errors import TransferStopped

__all__ = ["clear_stop", "each", "request_stop", "stop_point", "stop_requested"]

T = TypeVar("T")
R = TypeVar("R")

_STOP: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "harness_transfer_stop", default=None
)
_REQUESTED = threading.Event()  # stop at the next chunk boundary
_NOW = threading.Event()  # stop within a megabyte


def request_stop(*, now: bool = False) -> None:
    """Ask this process's transfers to stop: at the next chunk boundary, or with ``now`` at once."""
    _REQUESTED.set()
    if now:
        _NOW.set()


def stop_requested() -> bool:
    """True once ``request_stop`` was called (until ``clear_stop``)."""
    return _REQUESTED.is_set()


def clear_stop() -> None:
    """Forget a stop request: the face that asked for it calls this when its command is over."""
    _NOW.clear()
    _REQUESTED.clear()


def stop_point() -> None:
    """Raise if a sibling transfer failed: called between pieces of a blob (in the worker, and
    in a stream's fetch thread, which runs in the worker's context)."""
    if _NOW.is_set():
        raise TransferStopped("stopped at once: asked a second time")
    stop = _STOP.get()
    if stop is not None and stop.is_set():
        raise TransferStopped("stopped: another transfer of the same command failed")


def each(items: Sequence[T], work: Callable[[T], R], workers: int, name: str) -> list[R]:
    """``[work(item) for item in items]``, up to ``workers`` at a time."""
    if workers <= 1 or len(items) <= 1:
        return [work(item) for item in items]
    stop = threading.Event()

    def run(item: T) -> R:
        _STOP.set(stop)
        return work(item)

    with ThreadPoolExecutor(min(workers, len(items)), thread_name_prefix=name) as pool:
        futures = [pool.submit(contextvars.copy_context().run, run, item) for item in items]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)  # or all finished
            for future in done:
                failure = future.exception()
                if failure is not None:
                    raise failure
            return [future.result() for future in futures]
        except BaseException:
            # Asked to stop at a chunk boundary: the other uploads reach theirs by themselves
            # (each journals its session); anything else stops them within a megabyte.
            if not stop_requested() or _NOW.is_set():
                stop.set()
            for future in futures:
                future.cancel()
            raise
