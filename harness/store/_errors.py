"""The store's errors."""

from __future__ import annotations

from harness.errors import HarnessError

__all__ = ["StoreError", "UnsafeLayerError"]


class StoreError(HarnessError):
    """A store operation that cannot be done: unknown reference, ambiguous ID, corrupt state."""


class UnsafeLayerError(StoreError):
    """A layer that would write outside the model's directory, create a device, or expand
    beyond the limits: refused before anything of the image was stored."""
