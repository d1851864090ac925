"""Several blobs at once, in a bounded pool: results in the order of the items.

When one item fails (or Ctrl-C reaches the caller), the others are told to stop: the transfer
loops ask ``stopped()`` between pieces and give up within a megabyte, so the error is raised
once every worker has ended, with nothing still writing into what the caller cleans up. One item
runs in the calling thread.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import TypeVar

from harness.errors import TransferStopped

__all__ = ["each", "stop_point"]

T = TypeVar("T")
R = TypeVar("R")

_STOP: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "harness_transfer_stop", default=None
)


def stop_point() -> None:
    """Raise if a sibling transfer failed: called between pieces of a blob (in the worker, and
    in a stream's fetch thread, which runs in the worker's context)."""
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
            stop.set()
            for future in futures:
                future.cancel()
            raise
