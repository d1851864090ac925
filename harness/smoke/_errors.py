"""The smoke runner's error: a server that cannot be set up, started or asked."""

from __future__ import annotations

from harness.errors import HarnessError, Location

__all__ = ["SmokeError"]


class SmokeError(HarnessError):
    """A server that could not be prepared, started, or that died or failed a request.

    ``log_tail`` holds the last lines the server wrote (its own words: llama.cpp's load error,
    a Python traceback) when there is a server log to show; ``str(error)`` stays one line.
    """

    def __init__(
        self, message: str, location: Location | None = None, *, log_tail: str = ""
    ) -> None:
        super().__init__(message, location)
        self.log_tail = log_tail
