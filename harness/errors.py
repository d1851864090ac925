"""One exception tree for everything the harness reports to a user.

Every error knows where the problem is: a file and line (YAML, Packerfile) or a file and byte
offset (GGUF, tar). ``str(error)`` is the one line the CLI prints and pytest shows, with every
control character escaped. Packages raise these classes; none defines its own.

    HarnessError
    ├── UsageError          a command line that cannot be acted on
    │   └── ServerArgsError     an argv llama-server would refuse (``index``: the word)
    ├── GGUFError           a malformed GGUF (byte offset)
    ├── SpecError           model.yaml (file:line:col)
    │   ├── SpecErrors          several problems of one file
    │   └── UnitError           a size, count or percentage that cannot be read
    ├── PackerfileError     a Packerfile or ignore file (file:line:col, ``code``)
    │   ├── PackerfileWarning   legal but probably unintended; collected, never raised
    │   └── PackerfileErrors    several problems of one file
    ├── ArtifactError       the model file or image to check could not be produced
    ├── OCIError            layouts, blobs, tar layers, image configs (``key``)
    ├── BuildError          a build step (its Packerfile line)
    ├── ToolchainError      llama.cpp's programs and converter (``detail``: the tool's log)
    ├── SmokeError          a server that could not start or answer (``log_tail``)
    ├── QualityError        a quality measurement: its reference, corpus or llama-perplexity run
    ├── StoreError          the local store
    │   └── UnsafeLayerError    a layer refused before anything was stored
    ├── RegistryError       registries (``status``, ``code``; never a credential)
    │   ├── AuthError
    │   ├── NotFoundError
    │   ├── DigestError
    │   └── TransferStopped     given up because another transfer of the command failed
    └── PublishError        converting or publishing an image

The CLI prints `gguf-harness: error: <str(error)>` and exits 1 for any of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = [
    "ArtifactError",
    "AuthError",
    "BuildError",
    "DigestError",
    "GGUFError",
    "HarnessError",
    "HarnessWarning",
    "Location",
    "NotFoundError",
    "OCIError",
    "PackerfileError",
    "PackerfileErrors",
    "PackerfileWarning",
    "PublishError",
    "QualityError",
    "RegistryError",
    "ServerArgsError",
    "SmokeError",
    "SpecError",
    "SpecErrors",
    "StoreError",
    "ToolchainError",
    "TransferStopped",
    "UnitError",
    "UnsafeLayerError",
    "UsageError",
    "printable",
    "redact",
]

# C0 and C1 controls, DEL, and the bidirectional overrides that reorder what a terminal shows
_UNSAFE = frozenset(
    [*range(0x00, 0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
)


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` safe for a terminal or a CI log: every control character escaped (``\\x1b``), so
    text from a registry, a label or a model's metadata cannot clear the screen, move the cursor
    or fake a line of our own output. Tabs stay; newlines stay only when asked."""
    kept = {0x09, 0x0A} if keep_newlines else {0x09}
    if not any(ord(c) in _UNSAFE and ord(c) not in kept for c in text):
        return text
    return "".join(
        c
        if ord(c) not in _UNSAFE or ord(c) in kept
        else f"\\x{ord(c):02x}"
        if ord(c) < 0x100
        else f"\\u{ord(c):04x}"
        for c in text
    )


class Location:
    """Where a problem sits: ``path:line:col`` for text, ``path@offset`` for binary files."""

    __slots__ = ("col", "line", "offset", "path")

    def __init__(
        self,
        path: str | Path | None = None,
        line: int | None = None,
        col: int | None = None,
        offset: int | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.col = col
        self.offset = offset

    def __str__(self) -> str:
        text = self.path or "<input>"
        if self.line is not None:
            text += f":{self.line}"
            if self.col is not None:
                text += f":{self.col}"
        if self.offset is not None:
            text += f": at byte {self.offset}"
        return text

    def __repr__(self) -> str:
        return f"Location({str(self)!r})"

    def _key(self) -> tuple[str | None, int | None, int | None, int | None]:
        return (self.path, self.line, self.col, self.offset)

    def __eq__(self, other: object) -> bool:
        return self._key() == other._key() if isinstance(other, Location) else NotImplemented

    def __hash__(self) -> int:
        return hash(self._key())


class HarnessError(Exception):
    """Base of every error the harness raises on bad input or a failed stage."""

    def __init__(self, message: str, location: Location | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.location = location

    def __str__(self) -> str:
        # Messages quote what others wrote (registry errors, file names, metadata): escaped.
        if self.location is None:
            return printable(self.message, keep_newlines=True)
        return printable(f"{self.location}: {self.message}", keep_newlines=True)


class HarnessWarning(UserWarning):
    """A check that holds but tests less than it seems to (a chat check answered through
    llama-server's fallback template); shown by pytest and kept in the report."""


class UsageError(HarnessError):
    """A command line that cannot be acted on (missing file, bad flag value)."""


class ServerArgsError(UsageError):
    """An argv llama-server would refuse; ``index`` is the offending word's position."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


class GGUFError(HarnessError):
    """A file that is not a well-formed GGUF; the location carries the byte offset."""


class SpecError(HarnessError):
    """A model.yaml that is not valid YAML or does not match the schema; carries file:line:col."""


class UnitError(SpecError, ValueError):
    """A size, count or percentage that cannot be read; a ValueError too, for argument parsers."""


class ArtifactError(HarnessError):
    """The artifact a model's checks run on (its GGUF file or image) could not be produced."""


# --- Images on disk: OCI layouts, blobs, tar layers, image configs.


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


# --- model.yaml.


class SpecErrors(SpecError):
    """All problems found in one file; ``str()`` gives one per line, the first as the head.

    Its ``location`` is the first problem's and its ``message`` starts with the first problem's,
    so code that handles a plain SpecError still points at a real line.
    """

    def __init__(self, problems: Sequence[SpecError]) -> None:
        if not problems:
            raise ValueError("SpecErrors needs at least one problem")
        self.problems: tuple[SpecError, ...] = tuple(problems)
        head = self.problems[0]
        rest = "".join(f"\n{problem}" for problem in self.problems[1:])
        super().__init__(head.message + rest, head.location)


# --- Packerfiles and their ignore files.


class PackerfileError(HarnessError):
    """One problem in a Packerfile (or its ignore file).

    ``code`` is a short stable name for the kind of problem (``unknown-flag``, ``cmd-model``...),
    so that callers and tests need not match message text. Lines and columns count from 1;
    a column counts characters, a tab being one.
    """

    def __init__(self, message: str, location: Location | None = None, *, code: str) -> None:
        super().__init__(message, location)
        self.code = code

    @property
    def problems(self) -> tuple[PackerfileError, ...]:
        """Every problem this error stands for: itself alone, unless it is a PackerfileErrors."""
        return (self,)

    def sort_key(self) -> tuple[str, int, int]:
        loc = self.location
        if loc is None:
            return ("", 0, 0)
        return (loc.path or "", loc.line or 0, loc.col or 0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {str(self)!r})"


class PackerfileWarning(PackerfileError):
    """Something legal but probably unintended; collected on records, never raised."""


class PackerfileErrors(PackerfileError):
    """Several problems at once, ordered by position; the first one heads the message."""

    def __init__(self, problems: Iterable[PackerfileError]) -> None:
        ordered = tuple(sorted(problems, key=PackerfileError.sort_key))
        if not ordered:
            raise ValueError("PackerfileErrors needs at least one problem")
        first = ordered[0]
        more = len(ordered) - 1
        message = first.message
        if more:
            message += f" (and {more} more problem{'s' if more > 1 else ''})"
        super().__init__(message, first.location, code=first.code)
        self._problems = ordered

    @property
    def problems(self) -> tuple[PackerfileError, ...]:
        return self._problems


# --- Building an image from a Packerfile.


class BuildError(HarnessError):
    """A build step failed (missing source, bad checksum, converter error, ...)."""


# --- llama.cpp's programs and converter.


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


# --- Starting and asking a server.


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


class QualityError(HarnessError):
    """A quality measurement that cannot be made; ``part`` is the input at fault (``reference``,
    ``corpus``, or ``""``: llama-perplexity's run), so the chain can point at its YAML key."""

    def __init__(self, message: str, location: Location | None = None, *, part: str = "") -> None:
        super().__init__(message, location)
        self.part = part


# --- The local model store.


class StoreError(HarnessError):
    """A store operation that cannot be done: unknown reference, ambiguous ID, corrupt state."""


class UnsafeLayerError(StoreError):
    """A layer that would write outside the model's directory, create a device, or expand
    beyond the limits: refused before anything of the image was stored."""


# --- Registries. No message ever carries a credential: it names the registry, the
# repository and the request path, never a header, a token or a query string.


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


class TransferStopped(RegistryError):
    """A blob transfer given up because another of the same command failed; never retried."""


# --- Publishing an image.


class PublishError(HarnessError):
    """An image that cannot be converted or published as asked."""
