"""The one error the OCI code raises: every malformed blob, layout or config ends here."""

from __future__ import annotations

from harness.errors import HarnessError, Location

__all__ = ["OCIError"]


class OCIError(HarnessError):
    """A layout, blob, tar or image config that cannot be read or written as asked.

    ``location`` names the file (and byte offset when known); ``key`` the JSON member, e.g.
    ``manifests[0].digest``, since a JSON problem is found by key rather than by byte.
    """

    def __init__(
        self, message: str, location: Location | None = None, *, key: str | None = None
    ) -> None:
        super().__init__(message if key is None else f"{key}: {message}", location)
        self.key = key
