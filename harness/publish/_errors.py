"""The publish step's error."""

from __future__ import annotations

from harness.errors import HarnessError

__all__ = ["PublishError"]


class PublishError(HarnessError):
    """An image that cannot be converted or published as asked."""
