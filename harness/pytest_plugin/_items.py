"""The items: one per expectation, budget, smoke check and quality threshold, each measuring
through the chain and pointing at its YAML line."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest

from harness.errors import HarnessError, Location
from harness.expect import Check, ModelSpec, evaluate
from harness.report import Report

__all__ = [
    "BudgetItem",
    "CheckGroup",
    "CheckItem",
    "ModelItem",
    "QualityItem",
    "SectionGroup",
    "SmokeItem",
    "check_tree",
    "mark",
    "outcome_key",
    "pipeline_key",
    "pipeline_of",
    "report_key",
    "section_groups",
]

if TYPE_CHECKING:  # the chain is imported when an item first runs: pytest loads this plugin
    from harness.pipeline import Pipeline  # in every session, and collection needs none of it

pipeline_key = pytest.StashKey["Pipeline"]()
report_key = pytest.StashKey[Report]()
outcome_key = pytest.StashKey["Outcome"]()


class CheckGroup(pytest.Collector):
    """A section (`expect`) or a map inside it (`metadata`, `labels`)."""

    def __init__(self, *, spec: ModelSpec, checks: list[Check], depth: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.checks = checks
        self.depth = depth

    def collect(self) -> Iterable[pytest.Item | pytest.Collector]:
        return check_tree(self, self.spec, self.checks, self.depth)


def _parts(check: Check) -> list[str]:
    return [check.section, *check.name.split("::")]


def check_tree(
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
        return pipeline_of(self.config)

    def measure(self) -> Outcome:
        raise NotImplementedError

    def runtest(self) -> None:
        outcome = self.measure()
        self.stash[outcome_key] = outcome
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
        mark(self, check.marks)

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
        from harness.pipeline import early_template_warnings, run_record, template_warning, warn_at

        run = self.pipeline.smoke(self.spec)
        artifact = self.pipeline.artifact(self.spec)
        record = self.config.stash[report_key].model(str(self.spec.path), self.spec.name)
        record.run = record.run or run_record(self.spec, artifact, run)
        caution = template_warning(self.spec, artifact, self.index)
        if caution and (self.where, caution) not in early_template_warnings(self.spec):
            warn_at(self.where, caution)  # else said at collection already
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


class QualityItem(ModelItem):
    """One threshold of ``quality``: the model measured against its reference."""

    section = "quality"

    def measure(self) -> Outcome:
        from harness.pipeline import judge_quality

        run = self.pipeline.quality(self.spec)
        record = self.config.stash[report_key].model(str(self.spec.path), self.spec.name)
        record.quality = run.to_json()
        verdict = judge_quality(self.spec, run, self.item_name)
        self.where = verdict.location
        outcome = Outcome(verdict.passed, verdict.expected, verdict.value, verdict.message)
        why = verdict.expected_failure
        if why is not None:  # a strict xfail: it must fail, and so it is never published
            self.stash[outcome_key] = outcome
            if outcome.passed:
                return outcome._replace(passed=False, message=f"passed, expected to fail: {why}")
            pytest.xfail(f"{verdict.message}: expected ({why})")
        return outcome


class SectionGroup(pytest.Collector):
    """``memory`` (one item per budget), ``smoke`` (per check), ``quality`` (per threshold)."""

    def __init__(self, *, spec: ModelSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec

    def collect(self) -> Iterable[pytest.Item]:
        if self.name == "memory":
            assert self.spec.memory is not None
            for index, budget in enumerate(self.spec.memory.budgets):
                yield self._item(BudgetItem, index, budget.name, budget.location, ())
        elif self.name == "quality":
            assert self.spec.quality is not None
            for metric, threshold in self.spec.quality.thresholds.items():
                yield self._item(QualityItem, 0, metric, threshold.location, ())
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
        mark(item, marks)
        return item


def mark(node: pytest.Item | pytest.Collector, marks: Iterable[str]) -> None:
    """Add model.yaml's pytest marks to a node, each declared so --strict-markers accepts it."""
    for name in marks:
        node.config.addinivalue_line("markers", f"{name}: declared in a model.yaml")
        node.add_marker(name)


def pipeline_of(config: pytest.Config) -> Pipeline:
    """The session's Pipeline, made when first needed (see the import above)."""
    if pipeline_key not in config.stash:
        from harness.pipeline import Pipeline

        config.stash[pipeline_key] = Pipeline(Path(config.getoption("--harness-out")))
    return config.stash[pipeline_key]


def section_groups(parent: pytest.File, spec: ModelSpec) -> Iterator[pytest.Collector]:
    for name, section in (
        ("memory", spec.memory),
        ("smoke", spec.smoke),
        ("quality", spec.quality),
    ):
        if section is not None:
            yield SectionGroup.from_parent(parent, name=name, spec=spec)
