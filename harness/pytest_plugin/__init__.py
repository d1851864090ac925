"""pytest glue: each model.yaml is a collector, each expectation an item.

Thin on purpose: loading the file, producing the model's artifact and judging a check live in the
core; this module maps them onto pytest's collection, locations and reports.
"""

from __future__ import annotations

import fnmatch
import sys
from collections.abc import Generator, Iterable
from pathlib import Path
from typing import Any

import pytest

from harness._fs import display_path
from harness.errors import HarnessError, HarnessWarning, Location, SpecError, UsageError
from harness.expect import NO_CHECKS, ModelSpec, load_spec, update_from_report
from harness.report import ItemRecord, Report, publish_lines

from ._items import (
    BudgetItem,
    CheckItem,
    ModelItem,
    QualityItem,
    SmokeItem,
    check_tree,
    mark,
    outcome_key,
    pipeline_of,
    report_key,
    section_groups,
)

__all__ = ["BudgetItem", "CheckItem", "ModelFile", "ModelItem", "QualityItem", "SmokeItem"]

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
        "--diff-published",
        action="store_true",
        help="before publishing, diff each build against the tag it publishes to (read only)",
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
    config.stash[report_key] = Report()
    config.stash[_collected_key] = {}
    config.stash[_specs_key] = {}


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> ModelFile | None:
    patterns: list[str] = parent.config.getini("harness_model_files")
    if any(fnmatch.fnmatch(file_path.name, pattern) for pattern in patterns):
        return ModelFile.from_parent(parent, path=file_path)
    return None


class ModelFile(pytest.File):
    """A model.yaml: one collector per model, its checks grouped as `section::name` nodes."""

    def collect(self) -> Iterable[pytest.Item | pytest.Collector]:
        spec = load_spec(display_path(self.path))
        self.config.stash[_specs_key][str(spec.path)] = spec
        mark(self, spec.marks)
        if spec.source is not None and spec.source.kind == "gguf" and spec.smoke is not None:
            from harness.pipeline import early_template_warnings, warn_at

            for where, caution in early_template_warnings(spec):
                warn_at(where, caution)  # -W error: a collection error at that line
        items = [
            *check_tree(self, spec, list(spec.checks), depth=0),
            *section_groups(self, spec),
        ]
        if not items:
            # Nothing to check is no pass: say what is missing instead of pytest's silent exit 5.
            raise SpecError(NO_CHECKS, Location(display_path(self.path), 1))
        yield from items

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, HarnessError | HarnessWarning):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    only = config.getoption("--only")
    if not only:
        return
    try:
        wanted = pipeline_of(config).select(config.stash[_specs_key].values(), only)
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
    measured = item.stash.get(outcome_key, None)
    outcome: str = report.outcome if report.when == "call" else "error"
    if report.skipped:
        # an xfail (a variant model.yaml says must fail) is no failure of the run, and no pass
        outcome = "xfailed" if hasattr(report, "wasxfail") else "skipped"
    message = measured.message if measured is not None else ""
    if measured is None and report.failed and report.longrepr is not None:
        message = str(report.longrepr).strip().splitlines()[-1].strip()
    model = item.config.stash[report_key].model(str(item.spec.path), item.spec.name)
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
    report = config.stash[report_key]
    publishing = config.getoption("--publish") and not config.getoption("collectonly")
    specs, collected = config.stash[_specs_key], config.stash[_collected_key]
    if config.getoption("--diff-published") and not config.getoption("collectonly"):
        from harness.pipeline import diff_all_published

        diff_all_published(pipeline_of(config), report, specs)
    if publishing:
        from harness.cli._stop import Interrupted, graceful_stop
        from harness.pipeline import publish_all

        # SIGINT or SIGTERM while publishing: uploads stop between chunks, their sessions
        # journaled; each model's publish record says where it stopped.
        with graceful_stop() as stop:
            try:
                if not publish_all(pipeline_of(config), report, specs, collected):
                    session.exitstatus = pytest.ExitCode.TESTS_FAILED
            except Interrupted:
                pass  # a second signal: stop.signum holds the first
        if stop.signum is not None:
            sys.stderr.write("gguf-harness: publishing stopped; run again to resume\n")
            session.exitstatus = stop.status
    if config.getoption("--update-expectations"):
        updates = update_from_report(specs, report)
        config.stash[_updates_key] = [line for u in updates for line in (u.diff, *u.left) if line]
    path = config.getoption("--harness-report")
    if path:
        report.write(path)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    for title, lines in (
        ("publish", publish_lines(config.stash[report_key])),
        ("update-expectations", config.stash.get(_updates_key, [])),
    ):
        if lines:
            terminalreporter.section(f"gguf-harness {title}")
        for line in lines:
            terminalreporter.line(line)
