"""The typed records a model.yaml becomes (its memory, smoke and publish sections: _sections)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.errors import Location, SpecError

from ._expectations import Expectation
from ._quality import QualitySection
from ._sections import MemorySection, PublishSection, SmokeSection
from ._yaml import DataPath, Located

__all__ = ["NO_CHECKS", "BuildSpec", "Check", "Context", "ModelSpec", "SourceSpec", "Variant"]


@dataclass(frozen=True)
class Check:
    """One expectation: a top-level key of ``expect``, or one entry of its metadata or labels."""

    section: str  # "expect"
    name: str  # "architecture", "metadata::general.name", "labels::org.opencontainers.image.title"
    expected: Expectation
    location: Location  # the key in model.yaml
    marks: tuple[str, ...]

    @property
    def subject(self) -> str:
        """The name in messages: ``architecture``, ``metadata general.name``, ``label x.y``."""
        group, _, key = self.name.partition("::")
        if not key:
            return group
        return f"{'label' if group == 'labels' else group} {key}"


@dataclass(frozen=True)
class Context:
    """A named build context, resolved to a directory only when asked."""

    name: str
    kind: Literal["path", "package", "env"]
    value: str  # the path, package name or variable name as written
    location: Location
    base: Path  # the directory of model.yaml

    def directory(self) -> Path:
        """The directory, checked to exist; SpecError at the context's line otherwise."""
        if self.kind == "path":
            found = self.base / self.value
        elif self.kind == "package":
            found = _package_directory(self.value, self.name, self.location)
        else:
            text = os.environ.get(self.value)
            if not text:
                raise SpecError(
                    f"build context {self.name!r}: environment variable {self.value} is not set",
                    self.location,
                )
            found = Path(text).expanduser()  # relative: to the working directory, as a shell would
        if not found.is_dir():
            raise SpecError(
                f"build context {self.name!r}: {found} is not a directory", self.location
            )
        if self.kind != "package":
            _inside_allowed(found, self)
        return found


#: Directories outside the model repository that build contexts may name, separated by
#: ``os.pathsep``: set by the person running the harness (the Action's ``contexts`` input),
#: never by the model.yaml a pull request brings.
ALLOWED_CONTEXTS_ENV = "GGUF_HARNESS_CONTEXT_DIRS"


def repository_root(start: Path) -> Path:
    """The git repository holding ``start`` (its nearest ancestor with ``.git``), else ``start``."""
    here = start.resolve()
    for candidate in (here, *here.parents):
        if (candidate / ".git").exists():
            return candidate
    return here


def _inside_allowed(found: Path, context: Context) -> None:
    """A model.yaml comes from a pull request: its contexts may only reach into the repository
    (after ``..``, symlinks and ``$ENV``), or into a directory the person running allowed."""
    real = found.resolve()
    roots = [repository_root(context.base)]
    roots += [
        Path(d).expanduser().resolve()
        for d in os.environ.get(ALLOWED_CONTEXTS_ENV, "").split(os.pathsep)
        if d
    ]
    if any(real == root or root in real.parents for root in roots):
        return
    raise SpecError(
        f"build context {context.name!r}: {real} is outside the model repository ({roots[0]}):"
        f" refused, since a model.yaml may come from anyone; to allow it, list it in"
        f" ${ALLOWED_CONTEXTS_ENV} where the harness runs",
        context.location,
    )


def _package_directory(package: str, name: str, location: Location) -> Path:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise SpecError(
            f"build context {name!r}: Python package {package!r} is not installed", location
        )
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    if spec.origin is None:
        raise SpecError(f"build context {name!r}: {package!r} has no directory", location)
    return Path(spec.origin).parent


@dataclass(frozen=True)
class Variant:
    """One build of the model with its own args (merged over ``build.args``)."""

    name: str
    args: Mapping[str, str]
    location: Location


@dataclass(frozen=True)
class BuildSpec:
    """The ``build`` section, defaults filled in."""

    args: Mapping[str, str]
    target: str | None
    contexts: Mapping[str, Context]
    builder: Literal["native", "buildx"]
    variants: tuple[Variant, ...]
    location: Location | None  # None when model.yaml has no build section

    def context_dir(self, name: str) -> Path:
        """The directory of the named context; KeyError if there is none by that name."""
        return self.contexts[name].directory()

    def args_for(self, variant: Variant | None) -> dict[str, str]:
        """The build args of one variant (or of the plain build)."""
        return {**self.args, **(variant.args if variant else {})}


@dataclass(frozen=True)
class SourceSpec:
    """An artifact that already exists: the ``source`` section as written (one of gguf/image)."""

    gguf: str | None  # a GGUF file (first shard), relative to the model directory or `from_`
    image: str | None  # `oci:DIR[:TAG]` (an OCI layout) or a registry reference
    from_: str | None  # a build context name
    location: Location  # the `gguf:` or `image:` key

    @property
    def kind(self) -> Literal["gguf", "oci-layout", "registry"]:
        if self.gguf is not None:
            return "gguf"
        return "oci-layout" if (self.image or "").startswith("oci:") else "registry"

    @property
    def path(self) -> str | None:
        """The GGUF file or layout directory as written (relative); None for a registry."""
        if self.gguf is not None:
            return self.gguf
        return self._layout()[0] if self.kind == "oci-layout" else None

    @property
    def tag(self) -> str | None:
        """An OCI layout's tag, when written (``oci:out/model:v1``)."""
        return self._layout()[1] if self.kind == "oci-layout" else None

    @property
    def reference(self) -> str | None:
        """A registry reference, e.g. ``127.0.0.1:5000/smollm2:q4``."""
        return self.image if self.kind == "registry" else None

    def _layout(self) -> tuple[str, str | None]:
        text = (self.image or "").removeprefix("oci:")
        directory, colon, tag = text.rpartition(":")
        if not colon or "/" in tag:  # that colon belongs to the path, not a tag
            return text, None
        return directory, tag or None


#: Why a model.yaml with nothing to check is refused, and the smallest useful one.
NO_CHECKS = (
    "no checks: a model.yaml needs at least one of expect:, memory: budgets or smoke: checks."
    " The smallest useful one: 'schemaVersion: 1', 'source: {gguf: model.gguf}' and"
    " 'expect: {architecture: llama}' (or `gguf-harness inspect model.gguf` for the facts to"
    " expect)"
)


@dataclass(frozen=True)
class ModelSpec:
    """One model.yaml, validated."""

    path: Path
    name: str
    description: str | None
    marks: tuple[str, ...]
    packerfile: Path  # resolved against the model directory
    build: BuildSpec
    source: SourceSpec | None
    checks: tuple[Check, ...]
    expect_location: Location | None
    memory: MemorySection | None
    smoke: SmokeSection | None
    quality: QualitySection | None
    publish: PublishSection | None
    doc: Located  # the whole file, for locations of anything else

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def location(self) -> Location:
        """The file itself, for problems that belong to no one line."""
        return Location(self.path)

    def location_of(self, *path: str | int) -> Location:
        """The key at ``path`` in the file, e.g. ``location_of("build", "args", "QUANT")``."""
        key: DataPath = path
        return self.doc.key_location(key)

    def context_dir(self, name: str) -> Path:
        """The directory of a named build context (see ``BuildSpec.context_dir``)."""
        return self.build.context_dir(name)

    def source_path(self) -> Path | None:
        """The GGUF file or OCI layout directory of ``source``; None for registry references."""
        if self.source is None or self.source.path is None:
            return None
        base = self.context_dir(self.source.from_) if self.source.from_ else self.directory
        return base / self.source.path
