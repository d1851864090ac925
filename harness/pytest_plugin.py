"""pytest glue: each model.yaml is a collector, each expectation an item.

Thin on purpose: loading the file, producing the model's artifact and judging a check live in the
core; this module maps them onto pytest's collection, locations and reports.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.errors import HarnessError, Location
from harness.expect import Check, CheckResult, ModelSpec, evaluate, load_spec
from harness.pipeline import Pipeline
from harness.report import ItemRecord, Report

__all__ = ["CheckItem", "ModelFile"]

_pipeline_key = pytest.StashKey[Pipeline]()
_report_key = pytest.StashKey[Report]()
_result_key = pytest.StashKey[CheckResult]()


class CheckFailed(Exception):
    """Raised by an item whose check ran and did not hold."""

    def __init__(self, result: CheckResult) -> None:
        super().__init__(result.message)
        self.result = result


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gguf-harness")
    group.addoption(
        "--harness-report",
        metavar="PATH",
        default=None,
        help="write the JSON report of every model check (expected, measured, outcome) to PATH",
    )
    group.addoption(
        "--harness-out",
        metavar="DIR",
        default="out",
        help="where built images are written, one OCI layout per model (default: out)",
    )
    parser.addini(
        "harness_model_files",
        type="args",
        default=["model.yaml", "*.model.yaml"],
        help="glob patterns of model expectation files (gguf-harness)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_pipeline_key] = Pipeline(Path(config.getoption("--harness-out")))
    config.stash[_report_key] = Report()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> ModelFile | None:
    patterns: list[str] = parent.config.getini("harness_model_files")
    if any(fnmatch.fnmatch(file_path.name, pattern) for pattern in patterns):
        return ModelFile.from_parent(parent, path=file_path)
    return None


def _display_path(path: Path) -> str:
    """Paths relative to the working directory when below it: what editors and GitHub resolve."""
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


class ModelFile(pytest.File):
    """A model.yaml: one collector per model, its checks grouped as `section::name` nodes."""

    def collect(self) -> Iterable[pytest.Item | pytest.Collector]:
        spec = load_spec(_display_path(self.path))
        for mark in spec.marks:
            self.config.addinivalue_line("markers", f"{mark}: declared in a model.yaml")
            self.add_marker(mark)
        yield from _tree(self, spec, list(spec.checks), depth=0)
        yield from _unavailable(self, spec)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, HarnessError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


class CheckGroup(pytest.Collector):
    """A section (`expect`) or a map inside it (`metadata`, `labels`)."""

    def __init__(self, *, spec: ModelSpec, checks: list[Check], depth: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.checks = checks
        self.depth = depth

    def collect(self) -> Iterable[pytest.Item | pytest.Collector]:
        return _tree(self, self.spec, self.checks, self.depth)


def _parts(check: Check) -> list[str]:
    return [check.section, *check.name.split("::")]


def _tree(
    parent: pytest.Collector, spec: ModelSpec, checks: list[Check], depth: int
) -> Iterator[pytest.Item | pytest.Collector]:
    """Nest checks by the parts of their names, so node ids and `-k` read as the YAML does."""
    groups: dict[str, list[Check]] = {}
    for check in checks:
        parts = _parts(check)
        if len(parts) == depth + 1:
            yield CheckItem.from_parent(parent, name=parts[depth], spec=spec, check=check)
        else:
            groups.setdefault(parts[depth], []).append(check)
    for name, members in groups.items():
        yield CheckGroup.from_parent(parent, name=name, spec=spec, checks=members, depth=depth + 1)


class CheckItem(pytest.Item):
    """One expectation of one model."""

    def __init__(self, *, spec: ModelSpec, check: Check, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.check = check
        for mark in check.marks:
            self.config.addinivalue_line("markers", f"{mark}: declared in a model.yaml")
            self.add_marker(mark)

    @property
    def label(self) -> str:
        return ".".join(_parts(self.check))

    def runtest(self) -> None:
        subject = self.config.stash[_pipeline_key].subject(self.spec)
        result = evaluate(self.check, subject)
        self.stash[_result_key] = result
        if not result.passed:
            raise CheckFailed(result)

    def repr_failure(
        self,
        excinfo: pytest.ExceptionInfo[BaseException],
        style: Any = None,
    ) -> Any:
        error = excinfo.value
        where = self.check.location
        if isinstance(error, CheckFailed):
            result = error.result
            return (
                f"{where}: {self.label}: {result.message}\n"
                f"  expected: {self.check.expected.phrase()}\n"
                f"  actual:   {result.actual!r}"
            )
        if isinstance(error, HarnessError):
            return f"{where}: {self.label}: could not be checked:\n  {error}"
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[Path, int, str]:
        # pytest's summary and file:line annotations then point into the YAML, not into Python.
        line = self.check.location.line or 1
        return self.path, line - 1, self.label


class UnavailableItem(pytest.Item):
    """A declared expectation whose stage this version cannot run: it fails, never passes unseen."""

    def __init__(self, *, where: Location, what: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.where = where
        self.what = what

    def runtest(self) -> None:
        raise HarnessError(
            f"{self.what} cannot be checked: this gguf-harness has no such stage yet"
        )

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        return f"{self.where}: {excinfo.value}"

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, (self.where.line or 1) - 1, self.what


def _unavailable(parent: ModelFile, spec: ModelSpec) -> Iterator[pytest.Item]:
    for section in (spec.memory, spec.smoke, spec.publish):
        if section is not None:
            yield UnavailableItem.from_parent(
                parent, name=section.name, where=section.location, what=section.name
            )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if isinstance(item, CheckItem) and (report.when == "call" or not report.passed):
        _record(item, report)
    return report


def _record(item: CheckItem, report: pytest.TestReport) -> None:
    result = item.stash.get(_result_key, None)
    outcome = report.outcome if report.when == "call" else "error"
    if report.skipped:
        outcome = "skipped"
    message = result.message if result is not None else ""
    if result is None and report.failed and report.longrepr is not None:
        message = str(report.longrepr).strip().splitlines()[-1].strip()
    check = item.check
    model = item.config.stash[_report_key].model(str(item.spec.path), item.spec.name)
    model.items.append(
        ItemRecord(
            id=item.nodeid,
            section=check.section,
            name=check.name,
            location=f"{check.location.path}:{check.location.line}",
            outcome=outcome,
            duration=round(report.duration, 6),
            expected=result.expected if result is not None else None,
            actual=result.actual if result is not None else None,
            message=message,
        )
    )


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("--harness-report")
    if path:
        session.config.stash[_report_key].write(path)
