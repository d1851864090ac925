"""Image references as docker, skopeo and the distribution spec write them.

``127.0.0.1:5000/models/smollm2:q4_1``, ``ghcr.io/org/model@sha256:...``, ``smollm2`` (Docker
Hub's ``library/smollm2:latest``). Parsed strictly: a repository must be lowercase, a tag at most
128 characters; a string that is not a reference is refused rather than guessed at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from harness.errors import RegistryError, redact

__all__ = ["DOCKER_HUB", "Reference", "is_tag"]

DOCKER_HUB = "docker.io"
_DOCKER_HUB_API = "registry-1.docker.io"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")
_HOST = re.compile(
    r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)(?::[0-9]{1,5})?$"
)
_MAX_NAME = 255


@dataclass(frozen=True)
class Reference:
    """A parsed reference: ``registry/repository[:tag][@digest]``."""

    registry: str  # host[:port] as written; "docker.io" for Docker Hub
    repository: str  # "models/smollm2"; "library/x" on Docker Hub for a one-part name
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str, *, default_tag: str | None = "latest") -> Reference:
        """Parse ``text``; with neither tag nor digest, ``default_tag`` is used (if not None)."""
        if not isinstance(text, str) or not text or any(c.isspace() for c in text):
            raise RegistryError(f"{redact(str(text))!r} is not an image reference")
        rest, digest = text, None
        if "@" in rest:
            rest, digest = rest.rsplit("@", 1)
            if not _DIGEST.match(digest):
                raise RegistryError(f"{redact(text)!r}: the part after '@' is not a digest")
        registry, path = DOCKER_HUB, rest
        first, slash, remainder = rest.partition("/")
        if slash and (
            "." in first or ":" in first or first == "localhost" or first != first.lower()
        ):
            registry, path = first, remainder
        tag = None
        last_slash = path.rfind("/")
        colon = path.rfind(":")
        if colon > last_slash:
            path, tag = path[:colon], path[colon + 1 :]
            if not _TAG.match(tag):
                raise RegistryError(f"{redact(text)!r}: {tag!r} is not a valid tag")
        if not _HOST.match(registry):
            raise RegistryError(f"{redact(text)!r}: {registry!r} is not a registry host")
        if registry == DOCKER_HUB and "/" not in path:
            path = "library/" + path
        if not _REPOSITORY.match(path):
            raise RegistryError(
                f"{redact(text)!r}: {path!r} is not a repository name (lowercase letters, digits,"
                " separators '.', '_', '__', '-', components joined by '/')"
            )
        if len(registry) + 1 + len(path) > _MAX_NAME:
            raise RegistryError(f"{redact(text)!r}: name longer than {_MAX_NAME} characters")
        if tag is None and digest is None:
            tag = default_tag
        return cls(registry, path, tag, digest)

    @property
    def name(self) -> str:
        """``registry/repository``, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def target(self) -> str:
        """What ``/v2/<repository>/manifests/<target>`` takes: the digest if given, else the tag."""
        value = self.digest or self.tag
        if value is None:
            raise RegistryError("reference names neither a tag nor a digest", str(self))
        return value

    @property
    def api_host(self) -> str:
        """The host the registry API answers on (Docker Hub's API is not at docker.io)."""
        return _DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    def with_tag(self, tag: str) -> Reference:
        if not _TAG.match(tag):
            raise RegistryError(f"{tag!r} is not a valid tag", self.name)
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: str) -> Reference:
        if not _DIGEST.match(digest):
            raise RegistryError(f"{digest!r} is not a digest", self.name)
        return replace(self, digest=digest)

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def is_tag(value: str) -> bool:
    return bool(_TAG.match(value))
