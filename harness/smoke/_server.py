"""A running server: start it, wait until it is healthy, ask it things, measure it, stop it.

``Server.boot`` returns only with a healthy server: while waiting it watches the process and
fails as soon as it exits, with the tail of its log; on any exception (Ctrl-C included) it stops
what it started. A request that times out leaves the server busy answering it, so the next request
restarts the server first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from harness.errors import SmokeError

from ._client import (
    HttpReply,
    RequestFailed,
    completion_answer,
    embedding_vectors,
    get,
    post_json,
)
from ._command import ServerCommand
from ._docker import ContainerHandle
from ._logs import load_facts, log_tail, logged_timings, read_log, server_error, timings_from
from ._memory import MemoryPeak, MemorySampler
from ._process import ServerProcess, free_port
from ._records import Answer, RunMeasurements, Timings
from ._runners import Launch, Runner

__all__ = ["Server"]

_POLL = 0.02  # seconds between health probes: the harness's share of the time to healthy


class _Handle(Protocol):
    @property
    def returncode(self) -> int | None: ...

    def alive(self) -> bool: ...

    def stop(self, grace: float = ...) -> int | None: ...


class Server:
    """A server for one command (``start`` makes and boots one). Use it as a context manager,
    or call ``stop()``; the log stays at ``log_path`` (``server.log`` in ``log_dir``)."""

    def __init__(
        self,
        command: ServerCommand,
        runner: Runner,
        host: str,
        port: int | None,
        ready_timeout: float,
        log_dir: Path,
    ) -> None:
        self.command = command
        self.runner = runner
        self.host = host
        self.ready_timeout = ready_timeout
        self.log_dir = log_dir
        self._fixed_port = port
        self._handle: _Handle | None = None
        self._pid: int | None = None
        self._sampler: MemorySampler | None = None
        self._stale = False
        self._healthy: list[float] = []
        self._timings: list[Timings] = []
        self._peaks: list[MemoryPeak] = []
        self.port = 0
        self.launch: Launch | None = None
        self.log_path = log_dir / "server.log"

    # --- life -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def boot(self) -> None:
        """Launch, and return once healthy; on any failure (Ctrl-C too) stop what started."""
        self.port = self._fixed_port or free_port(self.host)
        self.launch = launch = self.runner.launch(self.command, self.host, self.port, self.log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for path, text in launch.files.items():
            path.write_text(text, encoding="utf-8")
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(f"$ {launch.command_line}\n")
        since = self.log_path.stat().st_size
        began = time.perf_counter()
        try:
            handle: _Handle
            if launch.container is not None:
                handle = ContainerHandle(launch.container, self.log_path)
                pid = handle.pid
            else:
                handle = ServerProcess(launch.argv, self.log_path, _child_env())
                pid = handle.pid
            self._handle = handle
            self._pid = pid
            self._sampler = MemorySampler(pid) if pid else None
            self._wait_healthy(began, since)
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self, began: float, since: int) -> None:
        assert self._handle is not None and self.launch is not None
        deadline = began + self.ready_timeout
        while True:
            code = self._handle.returncode
            if code is not None:
                raise self._died(f"{_exit_words(code)} before it was ready", since)
            try:
                reply = get(self.url + self.launch.health_path, timeout=2.0)
                if reply.status == 200:
                    self._healthy.append(time.perf_counter() - began)
                    return
            except RequestFailed:
                pass
            if time.perf_counter() > deadline:
                raise self._died(f"not ready within {self.ready_timeout:g} s", since)
            time.sleep(_POLL)

    def stop(self, grace: float = 5.0) -> int | None:
        """Stop the server (and its children), SIGKILL after ``grace`` seconds; idempotent.
        Returns its exit status."""
        handle, self._handle = self._handle, None
        code = handle.stop(grace) if handle is not None else None
        if self._sampler is not None:
            self._peaks.append(self._sampler.stop())
            self._sampler = None
        return code

    def restart(self) -> None:
        # A server still busy with a timed-out request would finish it before a graceful exit.
        self.stop(grace=0.0 if self._stale else 5.0)
        self._stale = False
        self.boot()

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the server exits (``gguf-harness run`` serving until Ctrl-C); its exit
        status, or None if it still runs after ``timeout`` seconds."""
        deadline = None if timeout is None else time.perf_counter() + timeout
        while self._handle is not None:
            code = self._handle.returncode
            if code is not None:
                return code
            if deadline is not None and time.perf_counter() > deadline:
                return None
            time.sleep(0.2)
        return None

    def serve(self, grace: float = 10.0) -> int:
        """Serve until the server exits or this process gets SIGINT, SIGTERM or SIGHUP; the
        signal is passed on to the server, which gets ``grace`` seconds to finish before it is
        stopped. Returns the exit status to leave with (128 + signal when one came). Only from
        the main thread (where Python delivers signals)."""
        received: list[int] = []

        def forward(signum: int, _frame: object) -> None:
            received.append(signum)
            handle = self._handle
            if isinstance(handle, ServerProcess):
                handle.send(signum)

        caught = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {signum: signal.signal(signum, forward) for signum in caught}
        try:
            code = None
            while code is None and not received:
                code = self.wait(timeout=0.2)
            if received:
                self.wait(timeout=grace)
        finally:
            self.stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return 128 + received[0] if received else (code or 0)

    @property
    def pid(self) -> int | None:
        """The server's process (a container's main process), while it runs."""
        return self._pid if self._handle is not None else None

    @property
    def alive(self) -> bool:
        return self._handle is not None and self._handle.alive()

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- asking ---------------------------------------------------------------------------

    def log_offset(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_tail(self, lines: int = 40, since: int = 0) -> str:
        return log_tail(self.log_path, lines, since)

    def post(self, path: str, payload: dict[str, Any], timeout: float) -> HttpReply:
        """POST JSON; a dead server or a timeout raises SmokeError with the log tail."""
        if self._stale or self._handle is None:
            self.restart()
        since = self.log_offset()
        try:
            return post_json(self.url + path, payload, timeout)
        except RequestFailed as failure:
            if failure.timed_out:
                self._stale = True
                raise self._died(f"gave no answer within {timeout:g} s", since) from None
            code = self._exit_code(wait=1.0)
            what = _exit_words(code) if code is not None else f"failed: {failure}"
            raise self._died(f"{what} while answering {path}", since) from None

    def chat(
        self, messages: Sequence[dict[str, str]], *, timeout: float = 60.0, **params: Any
    ) -> Answer:
        """A chat completion. The image's system prompt goes first unless ``messages`` have
        a system message of their own."""
        sent = [dict(m) for m in messages]
        prompt = self.command.system_prompt
        if prompt is not None and not any(m.get("role") == "system" for m in sent):
            sent.insert(0, {"role": "system", "content": prompt})
        return self._complete("/v1/chat/completions", {"messages": sent, **params}, timeout)

    def complete(self, prompt: str, *, timeout: float = 60.0, **params: Any) -> Answer:
        return self._complete("/v1/completions", {"prompt": prompt, **params}, timeout)

    def embed(self, texts: Sequence[str], *, timeout: float = 60.0) -> list[list[float]]:
        data = self._checked("/v1/embeddings", {"input": list(texts)}, timeout)[0]
        return embedding_vectors(data, len(texts))

    def _complete(self, path: str, payload: dict[str, Any], timeout: float) -> Answer:
        data, seconds, since = self._checked(path, payload, timeout)
        timings = timings_from(data.get("timings")) or logged_timings(self.log_path, since)
        if timings is not None:
            self._timings.append(timings)
        return completion_answer(data, seconds, timings)

    def _checked(
        self, path: str, payload: dict[str, Any], timeout: float
    ) -> tuple[dict[str, Any], float, int]:
        since = self.log_offset()
        began = time.perf_counter()
        reply = self.post(path, payload, timeout)
        seconds = time.perf_counter() - began
        if reply.status != 200:
            raise SmokeError(
                f"{path} answered HTTP {reply.status}: {reply.error_text()}",
                log_tail=self.log_tail(since=since),
            )
        try:
            data = reply.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise SmokeError(f"{path} answered something that is not a JSON object")
        return data, seconds, since

    def _exit_code(self, wait: float) -> int | None:
        """The exit status, giving a crashing process ``wait`` seconds to finish dying (and to
        finish writing its last words to the log)."""
        deadline = time.perf_counter() + wait
        while self._handle is not None:
            code = self._handle.returncode
            if code is not None or time.perf_counter() > deadline:
                return code
            time.sleep(0.02)
        return None

    def _died(self, what: str, since: int) -> SmokeError:
        # A crash may log nothing after the request began: then the last lines say more.
        tail = self.log_tail(since=since) or self.log_tail()
        reason = server_error(tail)
        name = self.runner.name
        message = f"{name} {what}" + (f": {reason}" if reason else "")
        return SmokeError(message, log_tail=tail)

    # --- measuring ------------------------------------------------------------------------

    def measurements(self) -> RunMeasurements:
        """What this server's run cost so far (memory peaks include stopped incarnations)."""
        peaks = list(self._peaks)
        if self._sampler is not None:
            peaks.append(self._sampler.peak())
        prompt_n = sum(t.prompt_n for t in self._timings)
        prompt_ms = sum(t.prompt_ms for t in self._timings)
        predicted_n = sum(t.predicted_n for t in self._timings)
        predicted_ms = sum(t.predicted_ms for t in self._timings)
        gpus = [p.gpu for p in peaks if p.gpu is not None]
        n_ctx, buffers = load_facts(read_log(self.log_path))
        return RunMeasurements(
            runner=self.runner.name,
            seconds_to_healthy=self._healthy[0] if self._healthy else None,
            starts=len(self._healthy),
            peak_rss_bytes=max((p.rss for p in peaks), default=0),
            peak_rss_anon_bytes=max((p.rss_anon for p in peaks), default=0),
            peak_gpu_bytes=max(gpus) if gpus else None,
            prompt_tokens_per_second=prompt_n * 1000 / prompt_ms if prompt_ms > 0 else None,
            generation_tokens_per_second=(
                predicted_n * 1000 / predicted_ms if predicted_ms > 0 else None
            ),
            requests_timed=len(self._timings),
            n_ctx=n_ctx,
            buffers_mib=buffers,
        )


def _exit_words(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # Loopback only: a proxy in the environment must not see the health probes.
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env
