"""pytest glue: each model.yaml is a collector, each expectation an item.

Thin on purpose: loading the file, producing the model's artifact and judging a check live in the
core; this module maps them onto pytest's collection, locations and reports.
"""

from __future__ import annotations

import fnmatch
import os
import warnings
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest

from harness.errors import HarnessError, HarnessWarning, Location, SpecError, UsageError
from harness.expect import NO_CHECKS, Check, ModelSpec, evaluate, load_spec, update_from_report
from harness.report import ItemRecord, Report, publish_lines

if TYPE_CHECKING:  # the chain is imported when an item first runs: pytest loads this plugin
    from harness.pipeline import Pipeline  # in every session, and collection needs none of it

__all__ = ["BudgetItem", "CheckItem", "ModelFile", "ModelItem", "SmokeItem"]

_pipeline_key = pytest.StashKey["Pipeline"]()
_report_key = pytest.StashKey[Report]()
_outcome_key = pytest.StashKey["Outcome"]()
_specs_key = pytest.StashKey[dict[str, ModelSpec]]()
# Every check collected per model (before -k, --deselect or --only): publishing needs them all.
_collected_key = pytest.StashKey[dict[str, list[str]]]()
_updates_key = pytest.StashKey[list[str]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gguf-harness")
    group.addoption(
        "--harness-report",
        metavar="PATH",
        default=None,
        help="write the JSON report of every model check (expected, measured, outcome) to PATH",
    )
    group.addoption(
        "--publish",
        action="store_true",
        help="after the run, publish each model whose every check passed (model.yaml publish:, "
        "default oci:out/published)",
    )
    group.addoption(
        "--update-expectations",
        action="store_true",
        help="rewrite each failing exact expectation in its model.yaml to what was measured "
        "(comments and layout kept) and print the diff; ranges and patterns are left alone",
    )
    group.addoption(
        "--only",
        metavar="NAME[:VARIANT]",
        help="run one model (and one build variant): a cell of `gguf-harness matrix`",
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
    config.stash[_report_key] = Report()
    config.stash[_collected_key] = {}
    config.stash[_specs_key] = {}


def _pipeline(config: pytest.Config) -> Pipeline:
    if _pipeline_key not in config.stash:  # made when first needed (see the import above)
        from harness.pipeline import Pipeline

        config.stash[_pipeline_key] = Pipeline(Path(config.getoption("--harness-out")))
    return config.stash[_pipeline_key]


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
        self.config.stash[_specs_key][str(spec.path)] = spec
        for mark in spec.marks:
            self.config.addinivalue_line("markers", f"{mark}: declared in a model.yaml")
            self.add_marker(mark)
        items = [*_tree(self, spec, list(spec.checks), depth=0), *_section_groups(self, spec)]
        if not items:
            # Nothing to check is no pass: say what is missing instead of pytest's silent exit 5.
            raise SpecError(NO_CHECKS, Location(_display_path(self.path), 1))
        yield from items

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


class Outcome(NamedTuple):
    """What an item measured: the verdict, expected and actual values, and how to say it."""

    passed: bool
    expected: Any
    actual: Any
    message: str
    detail: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()  # what holds but does not test what it seems to


class ItemFailed(Exception):
    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.message)
        self.outcome = outcome


class ModelItem(pytest.Item):
    """One check of one model; subclasses say what it measures in ``measure``."""

    section = ""

    def __init__(
        self, *, spec: ModelSpec, where: Location, label: str, index: int = 0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.where = where
        self.label = label
        self.index = index  # of the budget or smoke check in its section
        self.item_name = self.name

    @property
    def pipeline(self) -> Pipeline:
        return _pipeline(self.config)

    def measure(self) -> Outcome:
        raise NotImplementedError

    def runtest(self) -> None:
        outcome = self.measure()
        self.stash[_outcome_key] = outcome
        if not outcome.passed:
            raise ItemFailed(outcome)

    def repr_failure(
        self,
        excinfo: pytest.ExceptionInfo[BaseException],
        style: Any = None,
    ) -> Any:
        error = excinfo.value
        if isinstance(error, ItemFailed):
            lines = [f"{self.where}: {self.label}: {error.outcome.message}"]
            return "\n".join(lines + [f"  {line}" for line in error.outcome.detail])
        if isinstance(error, HarnessError):
            return f"{self.where}: {self.label}: could not be checked:\n  {error}"
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[Path, int, str]:
        # pytest's summary and file:line annotations then point into the YAML, not into Python.
        return self.path, (self.where.line or 1) - 1, self.label


class CheckItem(ModelItem):
    """One expectation of the model's GGUF or image (the ``expect`` section)."""

    section = "expect"

    def __init__(self, *, check: Check, **kwargs: Any) -> None:
        super().__init__(where=check.location, label=".".join(_parts(check)), **kwargs)
        self.check = check
        self.item_name = check.name
        for mark in check.marks:
            self.config.addinivalue_line("markers", f"{mark}: declared in a model.yaml")
            self.add_marker(mark)

    def measure(self) -> Outcome:
        result = evaluate(self.check, self.pipeline.subject(self.spec))
        detail = (f"expected: {self.check.expected.phrase()}", f"actual:   {result.actual!r}")
        return Outcome(result.passed, result.expected, result.actual, result.message, detail)


class BudgetItem(ModelItem):
    """One machine of the ``memory`` section: does the model fit it, and how much context."""

    section = "memory"

    def measure(self) -> Outcome:
        assert self.spec.memory is not None
        from harness.pipeline import check_memory

        result = check_memory(self.pipeline.artifact(self.spec), self.spec.memory, self.index)
        limits = {c.what: c.limit for c in result.checks}
        used = {c.what: c.used for c in result.checks}
        detail = result.detail()
        actual = {**used, "max_context": result.max_context, "estimate": result.to_json()}
        return Outcome(result.passed, limits, actual, result.summary(), detail)


class SmokeItem(ModelItem):
    """One smoke check: a question to the model served as its Cmd says, and what must hold."""

    section = "smoke"

    def measure(self) -> Outcome:
        from harness.pipeline import run_record, template_warning

        run = self.pipeline.smoke(self.spec)
        artifact = self.pipeline.artifact(self.spec)
        record = self.config.stash[_report_key].model(str(self.spec.path), self.spec.name)
        record.run = record.run or run_record(self.spec, artifact, run)
        caution = template_warning(self.spec, artifact, self.index)
        if caution:
            warnings.warn(HarnessWarning(f"{self.where}: {caution}"), stacklevel=1)
        result = run.results[self.index]
        assert self.spec.smoke is not None
        if result.failures:
            path = result.failures[0].path
            self.where = self.spec.smoke.location_of("checks", self.index, *path)
        detail: tuple[str, ...] = (f"answer: {result.text!r}",) if result.text is not None else ()
        if not result.passed and result.log_tail:
            detail += ("server log:", *result.log_tail.splitlines()[-15:])
        expected = self.spec.smoke.expected[self.index]
        actual = {"text": result.text, **result.measured, "seconds": result.seconds}
        cautions = (caution,) if caution else ()
        return Outcome(result.passed, expected, actual, result.message, detail, cautions)


class SectionGroup(pytest.Collector):
    """``memory`` (one item per budget) or ``smoke`` (one item per check)."""

    def __init__(self, *, spec: ModelSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec

    def collect(self) -> Iterable[pytest.Item]:
        if self.name == "memory":
            assert self.spec.memory is not None
            for index, budget in enumerate(self.spec.memory.budgets):
                yield self._item(BudgetItem, index, budget.name, budget.location, ())
        else:
            assert self.spec.smoke is not None
            for index, check in enumerate(self.spec.smoke.checks):
                assert check.location is not None
                yield self._item(SmokeItem, index, check.name, check.location, check.marks)

    def _item(
        self, kind: type[ModelItem], index: int, name: str, where: Location, marks: Iterable[str]
    ) -> pytest.Item:
        item = kind.from_parent(
            self, name=name, spec=self.spec, where=where, label=f"{self.name}.{name}", index=index
        )
        for mark in marks:
            self.config.addinivalue_line("markers", f"{mark}: declared in a model.yaml")
            item.add_marker(mark)
        return item


def _section_groups(parent: ModelFile, spec: ModelSpec) -> Iterator[pytest.Collector]:
    for name, section in (("memory", spec.memory), ("smoke", spec.smoke)):
        if section is not None:
            yield SectionGroup.from_parent(parent, name=name, spec=spec)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    only = config.getoption("--only")
    if not only:
        return
    try:
        wanted = _pipeline(config).select(config.stash[_specs_key].values(), only)
    except UsageError as error:
        raise pytest.UsageError(str(error)) from None
    keep = [i for i in items if not isinstance(i, ModelItem) or str(i.spec.path) in wanted]
    dropped = [i for i in items if i not in keep]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def pytest_itemcollected(item: pytest.Item) -> None:
    if isinstance(item, ModelItem):
        collected = item.config.stash[_collected_key]
        collected.setdefault(str(item.spec.path), []).append(item.nodeid)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if isinstance(item, ModelItem) and (report.when == "call" or not report.passed):
        _record(item, report)
    return report


def _record(item: ModelItem, report: pytest.TestReport) -> None:
    measured = item.stash.get(_outcome_key, None)
    outcome = "skipped" if report.skipped else report.outcome if report.when == "call" else "error"
    message = measured.message if measured is not None else ""
    if measured is None and report.failed and report.longrepr is not None:
        message = str(report.longrepr).strip().splitlines()[-1].strip()
    model = item.config.stash[_report_key].model(str(item.spec.path), item.spec.name)
    model.items.append(
        ItemRecord(
            id=item.nodeid,
            section=item.section or item.name,
            name=item.item_name,
            location=f"{item.where.path}:{item.where.line}",
            outcome=outcome,
            duration=round(report.duration, 6),
            expected=measured.expected if measured is not None else None,
            actual=measured.actual if measured is not None else None,
            message=message,
            warnings=list(measured.warnings) if measured is not None else [],
        )
    )


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    report = config.stash[_report_key]
    publishing = config.getoption("--publish") and not config.getoption("collectonly")
    specs, collected = config.stash[_specs_key], config.stash[_collected_key]
    if publishing:
        from harness.pipeline import publish_all

        if not publish_all(_pipeline(config), report, specs, collected):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if config.getoption("--update-expectations"):
        updates = update_from_report(specs, report)
        config.stash[_updates_key] = [line for u in updates for line in (u.diff, *u.left) if line]
    if path := config.getoption("--harness-report"):
        report.write(path)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    for title, lines in (
        ("publish", publish_lines(config.stash[_report_key])),
        ("update-expectations", config.stash.get(_updates_key, [])),
    ):
        if lines:
            terminalreporter.section(f"gguf-harness {title}")
        for line in lines:
            terminalreporter.line(line)
