"""What to publish where (model.yaml's ``publish:``) and what was published."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from harness.distribution import is_tag
from harness.errors import PublishError
from harness.expect import PublishSection

__all__ = ["FORMATS", "PublishResult", "PublishSpec", "Published", "tag_for"]

FORMATS = ("gguf-packer", "modelpack", "docker-model-runner")
_SUFFIX = {"gguf-packer": "", "modelpack": "-modelpack", "docker-model-runner": "-dmr"}
_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")


@dataclass(frozen=True)
class PublishSpec:
    """model.yaml's ``publish:`` section, with ``${ARG}`` in tags already expanded."""

    references: tuple[str, ...]
    tags: tuple[str, ...] = ("latest",)
    annotations: Mapping[str, str] = field(default_factory=dict)
    formats: tuple[str, ...] = ("gguf-packer",)

    @classmethod
    def from_section(
        cls,
        section: PublishSection | None,
        build_args: Mapping[str, str] | None = None,
        *,
        default_target: str | None = None,
    ) -> PublishSpec:
        """The spec for one build variant: ``${NAME}`` in a tag becomes that build arg's value
        (``${SIZE}-${QUANT}`` with SIZE=0.5b, QUANT=q4-k-m gives ``0.5b-q4-k-m``); with no
        ``references``, ``default_target`` (e.g. ``oci:out/published``) is used."""
        args = dict(build_args or {})

        def expand(tag: str) -> str:
            def value(match: re.Match[str]) -> str:
                if match.group(1) not in args:
                    raise PublishError(f"publish tag {tag!r}: no build arg {match.group(1)!r}")
                return args[match.group(1)]

            expanded = _PLACEHOLDER.sub(value, tag)
            if not is_tag(expanded):
                raise PublishError(f"publish tag {tag!r} expands to {expanded!r}, not a tag")
            return expanded

        if section is None:
            return cls((default_target,) if default_target else ())
        references = section.references
        if not references and default_target:
            references = (default_target,)
        tags = tuple(dict.fromkeys(expand(t) for t in section.tags))
        return cls(references, tags, dict(section.annotations), section.formats)


@dataclass(frozen=True)
class Published:
    """One artifact at one reference and tag."""

    reference: str  # "127.0.0.1:5000/smollm2:q4-modelpack" or "oci:DIR:q4"
    format: str
    digest: str
    bytes_sent: int
    changed: bool  # False: the registry already had exactly this
    report: str | None  # "referrers-api", "tag-schema", "kept" (already attached), None


@dataclass(frozen=True)
class PublishResult:
    published: bool
    reason: str | None  # why nothing was published
    items: tuple[Published, ...] = ()

    @property
    def bytes_sent(self) -> int:
        return sum(item.bytes_sent for item in self.items)


def tag_for(tag: str, fmt: str, formats: Sequence[str]) -> str:
    """The tag ``fmt`` is published under."""
    return tag if formats and fmt == formats[0] else tag + _SUFFIX[fmt]
