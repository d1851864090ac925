"""The one error the toolchain raises: a llama.cpp tool that could not be found or that failed."""

from __future__ import annotations

from pathlib import Path

from harness.errors import HarnessError, Location

__all__ = ["ToolchainError"]


class ToolchainError(HarnessError):
    """llama.cpp's converter or quantizer is missing, refused its input, or failed.

    ``str(error)`` stays one line (the tool's own last error line); ``detail`` keeps the tail of
    the tool's log for a report or a ``--verbose`` run.
    """

    def __init__(
        self,
        message: str,
        location: Location | None = None,
        *,
        detail: str = "",
    ) -> None:
        super().__init__(message, location)
        self.detail = detail

    @classmethod
    def at(cls, path: str | Path, message: str, *, detail: str = "") -> ToolchainError:
        return cls(message, Location(path), detail=detail)
