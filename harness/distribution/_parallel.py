"""Several blobs at once, in a bounded pool: results in the order of the items, the first error
raised at once (what has not started is cancelled; what runs is not waited for, so Ctrl-C or a
refused blob ends the command now). One item runs in the calling thread."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["each"]

T = TypeVar("T")
R = TypeVar("R")


def each(items: Sequence[T], work: Callable[[T], R], workers: int, name: str) -> list[R]:
    """``[work(item) for item in items]``, up to ``workers`` at a time."""
    if workers <= 1 or len(items) <= 1:
        return [work(item) for item in items]
    pool = ThreadPoolExecutor(min(workers, len(items)), thread_name_prefix=name)
    try:
        futures = [pool.submit(work, item) for item in items]
        results = [future.result() for future in futures]
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return results
