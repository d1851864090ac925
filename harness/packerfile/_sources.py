"""What kind of thing a source or a base names: a URL, a Git repository, an image reference."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = [
    "OCI_LAYOUT_SCHEME",
    "is_git_source",
    "is_http_source",
    "is_image_reference",
    "names_packer_frontend",
]

# An image in an OCI layout directory on disk (``oci-layout://DIR[:TAG]``): the native builder
# reads it directly, where BuildKit needs it as a named build context.
OCI_LAYOUT_SCHEME = "oci-layout://"

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
# The grammar of github.com/distribution/reference, which BuildKit applies to FROM.
_REFERENCE = re.compile(
    rf"^(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*(?::{_TAG})?(?:@{_DIGEST})?$"
)


def is_git_source(src: str) -> bool:
    """A Git remote as BuildKit's ADD recognises one (an http(s) URL must end in .git)."""
    if src.startswith(("git@", "git://", "ssh://")):
        return True
    if src.startswith(("http://", "https://")):
        return urlsplit(src).path.endswith(".git")
    return False


def is_http_source(src: str) -> bool:
    return src.startswith(("http://", "https://")) and not is_git_source(src)


def is_image_reference(ref: str) -> bool:
    if ref.startswith(OCI_LAYOUT_SCHEME):
        return len(ref) > len(OCI_LAYOUT_SCHEME)
    name = ref.split("@", 1)[0]
    return len(name) <= 255 and _REFERENCE.match(ref) is not None


def names_packer_frontend(syntax: str) -> bool:
    """Whether a ``# syntax=`` value names a gguf-packer frontend image (any tag or digest)."""
    name = syntax.strip().split("@", 1)[0]
    head, _, last = name.rpartition("/")
    last = last.split(":", 1)[0]
    return "gguf-packer" in f"{head}/{last}".lower()
