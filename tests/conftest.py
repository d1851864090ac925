"""Shared test set-up.

A test that needs a real component (llama.cpp, a registry, dockerd) carries
``@pytest.mark.component("name")``. It may skip on a laptop without that component, but under
``CI=true`` such a skip is turned into a failure: CI must prove the real thing, not skip it.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

# tests/services.py: the dockerd, registry and registry_factory fixtures (real services).
pytest_plugins = ["pytester", "tests.services"]

IN_CI = os.environ.get("CI") == "true"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    marker = item.get_closest_marker("component")
    if IN_CI and marker is not None and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"component {marker.args[0]!r} is required under CI=true: {reason}"
    return report
