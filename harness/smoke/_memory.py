"""Peak resident memory of a process and its descendants, read from /proc by a sampler thread.

Each sample sums VmRSS (and its anonymous part, RssAnon) over the process tree; the peak of the
sums is kept. The kernel's own high-water mark (VmHWM) of each process is read too, so that a
spike shorter than the sampling interval still shows in ``peak_rss`` for a one-process server.
Where ``nvidia-smi`` exists, the GPU memory its processes use is sampled as well (less often:
each call costs tens of milliseconds).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MemoryPeak", "MemorySampler", "descendants"]

_GPU_EVERY = 10  # samples between two nvidia-smi calls


@dataclass(frozen=True)
class MemoryPeak:
    rss: int  # bytes: the process tree's peak resident set (file-backed pages included)
    rss_anon: int  # bytes: the peak of its anonymous part (heap, KV cache, compute buffers)
    gpu: int | None  # bytes of GPU memory, None where no GPU could be read
    samples: int


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it: from each thread's ``children`` list where the kernel
    keeps one (a few small reads; a server rarely has children), else from /proc's parent
    links (a read of every process's stat: sampled every 50 ms, that costs a loaded 2-core
    machine a fifth of a smoke run's speed)."""
    if Path(f"/proc/{pid}/task/{pid}/children").exists():
        return _descendants_by_children(pid)
    return _descendants_by_scan(pid)


def _descendants_by_scan(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses; fields resume after the last ")".
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


def _descendants_by_children(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                text = Path(f"/proc/{current}/task/{task}/children").read_text()
            except OSError:
                continue
            todo.extend(int(child) for child in text.split())
    return found


def _status(pid: int) -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return values
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon"):
            number = rest.split()
            if number:
                values[key] = int(number[0]) * 1024
    return values


class MemorySampler:
    """Samples the tree under ``pid`` every ``interval`` seconds until ``stop()``."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self._rss = 0
        self._anon = 0
        self._hwm = 0
        self._gpu: int | None = None
        self._samples = 0
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._smi = shutil.which("nvidia-smi")
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(self.interval)

    def sample(self) -> None:
        tree = descendants(self.pid)
        statuses = [_status(pid) for pid in tree]
        rss = sum(s.get("VmRSS", 0) for s in statuses)
        anon = sum(s.get("RssAnon", 0) for s in statuses)
        hwm = max((s.get("VmHWM", 0) for s in statuses), default=0)
        gpu = self._gpu_bytes(tree) if self._smi and self._samples % _GPU_EVERY == 0 else None
        with self._lock:
            self._rss = max(self._rss, rss)
            self._anon = max(self._anon, anon)
            self._hwm = max(self._hwm, hwm)
            if gpu is not None:
                self._gpu = max(self._gpu or 0, gpu)
            self._samples += 1

    def peak(self) -> MemoryPeak:
        with self._lock:
            return MemoryPeak(max(self._rss, self._hwm), self._anon, self._gpu, self._samples)

    def stop(self) -> MemoryPeak:
        """Take a last sample (the tree may be gone already) and end the thread."""
        if not self._done.is_set():
            with contextlib.suppress(OSError):
                self.sample()
            self._done.set()
            self._thread.join(timeout=5)
        return self.peak()

    def _gpu_bytes(self, tree: list[int]) -> int | None:
        assert self._smi is not None
        try:
            out = subprocess.run(
                [
                    self._smi,
                    "--query-compute-apps=pid,used_memory",
                    "--format=csv,noheader,nounits",
                ],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        pids = set(tree)
        total = 0
        for line in out.splitlines():
            pid, _, mib = line.partition(",")
            with contextlib.suppress(ValueError):
                if int(pid) in pids:
                    total += int(float(mib)) * 1024 * 1024
        return total
