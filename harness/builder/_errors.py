"""The builder's error: a step that could not run, located at its Packerfile line."""

from __future__ import annotations

from harness.errors import HarnessError

__all__ = ["BuildError"]


class BuildError(HarnessError):
    """A build step failed (missing source, bad checksum, converter error, ...)."""
