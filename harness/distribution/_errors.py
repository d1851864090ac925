"""Errors of the registry client. None of them ever carries a credential: messages name the
registry, the repository and the request path, never a header, a token or a query string."""

from __future__ import annotations

import re

from harness.errors import HarnessError, Location

__all__ = ["AuthError", "DigestError", "NotFoundError", "RegistryError", "redact"]

# user:password@ in a URL or reference a user typed; query strings hold upload state tokens.
_USERINFO = re.compile(r"(?<=//)[^/@\s]*@|^[^/@\s:]+:[^/@\s]*@")
_QUERY = re.compile(r"\?\S*")


def redact(text: str) -> str:
    """``text`` with any ``user:password@`` part and any query string removed."""
    return _QUERY.sub("", _USERINFO.sub("***@", text))


class RegistryError(HarnessError):
    """A registry operation that failed: unreachable, refused, or answered something invalid.

    ``location`` names the reference (``127.0.0.1:5000/smollm2:q4``); ``status`` is the last
    HTTP status when there was one, ``code`` the registry's error code (``MANIFEST_UNKNOWN``).
    """

    def __init__(
        self,
        message: str,
        reference: str | None = None,
        *,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(redact(message), Location(redact(reference)) if reference else None)
        self.status = status
        self.code = code


class AuthError(RegistryError):
    """The registry refused our credentials, or wants credentials we do not have."""


class NotFoundError(RegistryError):
    """The manifest, blob or repository does not exist."""


class DigestError(RegistryError):
    """Content that does not match the digest or size it was asked for by."""
