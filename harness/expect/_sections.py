"""model.yaml's ``memory``, ``smoke`` and ``publish`` sections as typed records.

Each section is read once, at load, into the records the chain consumes (the estimator's
``RunSettings`` and ``Budget``, smoke checks, what to publish), each keeping the YAML location of
what it came from; a value the chain cannot take is a SpecError at its line then, not a failure
of some later stage.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.errors import HarnessError, Location, SpecError
from harness.estimate import Budget, RunSettings

from ._smoke import SmokeCheck
from ._yaml import DataPath, Located

__all__ = ["BudgetSpec", "MemorySection", "PublishSection", "SmokeSection"]


@dataclass(frozen=True)
class BudgetSpec:
    """One machine of ``memory.budgets``."""

    budget: Budget
    location: Location  # the list item

    @property
    def name(self) -> str:
        return self.budget.name


@dataclass(frozen=True)
class MemorySection:
    """``memory``: the settings to estimate at (over the image's Cmd) and the machines to fit."""

    settings: RunSettings  # its server_args, then its named fields over them
    budgets: tuple[BudgetSpec, ...]
    location: Location
    doc: Located = field(repr=False, compare=False)

    def location_of(self, *path: str | int) -> Location:
        """The key at ``path`` inside the section: ``location_of("budgets", 1, "vram")``."""
        key: DataPath = ("memory", *path)
        return self.doc.key_location(key)


@dataclass(frozen=True)
class SmokeSection:
    """``smoke``: the checks asked of one server started as the image's Cmd says."""

    server_args: tuple[str, ...]  # appended to the image's Cmd
    checks: tuple[SmokeCheck, ...]
    expected: tuple[Any, ...]  # each check's ``expect`` as written, for reports
    location: Location
    doc: Located = field(repr=False, compare=False)

    def location_of(self, *path: str | int) -> Location:
        """The key at ``path`` inside the section: ``location_of("checks", 0, "expect")``."""
        key: DataPath = ("smoke", *path)
        return self.doc.key_location(key)


@dataclass(frozen=True)
class PublishSection:
    """``publish``: where and how the image goes once every check passed. Tags may still hold
    ``${ARG}`` placeholders, expanded per build variant when published."""

    references: tuple[str, ...]
    tags: tuple[str, ...]
    annotations: Mapping[str, str]
    formats: tuple[str, ...]
    location: Location


def memory_section(doc: Located, raw: Mapping[str, Any]) -> MemorySection:
    try:
        settings = RunSettings.from_yaml(raw)
    except HarnessError as error:
        raise SpecError(f"memory: {error.message}", doc.key_location(("memory",))) from None
    budgets = []
    for index, entry in enumerate(raw.get("budgets") or ()):
        where = doc.key_location(("memory", "budgets", index))
        try:
            budget = Budget.from_yaml(entry, ram=raw.get("ram"))
        except (HarnessError, ValueError, TypeError) as error:
            raise SpecError(f"memory budget: {error}", where) from None
        budgets.append(BudgetSpec(budget, where))
    return MemorySection(settings, tuple(budgets), doc.key_location(("memory",)), doc)


def smoke_section(doc: Located, raw: Mapping[str, Any]) -> SmokeSection:
    items = list(raw.get("checks") or ())
    checks = tuple(
        SmokeCheck.from_mapping(item, doc.key_location(("smoke", "checks", index)))
        for index, item in enumerate(items)
    )
    return SmokeSection(
        server_args=tuple(str(a) for a in raw.get("server_args") or ()),
        checks=checks,
        expected=tuple(item.get("expect") for item in items),
        location=doc.key_location(("smoke",)),
        doc=doc,
    )


def publish_section(doc: Located, raw: Mapping[str, Any]) -> PublishSection:
    return PublishSection(
        references=tuple(str(r) for r in raw.get("references") or ()),
        tags=tuple(str(t) for t in raw.get("tags") or ("latest",)),
        annotations={str(k): str(v) for k, v in (raw.get("annotations") or {}).items()},
        formats=tuple(str(f) for f in raw.get("formats") or ("gguf-packer",)),
        location=doc.key_location(("publish",)),
    )
