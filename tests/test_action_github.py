"""run_action's GitHub side through PyGithub against tests/github_server.py on loopback:
releases on tags, the check run in a matrix cell, and what happens without a token or with a
token GitHub refuses."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from harness.action import run_action
from tests.action_runner import parse_outputs
from tests.github_server import GitHubServer, github_server
from tests.test_action_report import RICH

DIGESTS = {"smollm2": {"ghcr.io/o/smollm2:latest": "sha256:" + "cd" * 32}}


@pytest.fixture
def server() -> Any:
    with github_server() as started:
        yield started


def _env(tmp_path: Path, server: GitHubServer, **more: str) -> dict[str, str]:
    (tmp_path / "out").touch()
    (tmp_path / "summary").touch()
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"ref": more.get("GITHUB_REF", ""), "after": "e" * 40}))
    return {
        "GITHUB_OUTPUT": str(tmp_path / "out"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"),
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_EVENT_NAME": "push",
        "GITHUB_REPOSITORY": server.repository,
        "GITHUB_API_URL": server.url,
        "GITHUB_SHA": "e" * 40,
        "GITHUB_JOB": "models",
        "GGUF_HARNESS_GITHUB_TOKEN": server.token,
        "GGUF_HARNESS_GITHUB_WRITE_DELAY": "0",
        **more,
    }


def _report(tmp_path: Path, passed: bool = True) -> Path:
    data = json.loads(json.dumps(RICH))
    if passed:
        for model in data["models"]:
            for item in model["items"]:
                item["outcome"] = "passed"
            model["passed"] = True
        data["passed"] = True
    path = tmp_path / "report.json"
    path.write_text(json.dumps(data))
    return path


def test_release_on_a_tag_carries_summary_and_digests(tmp_path: Path, server: GitHubServer) -> None:
    env = _env(tmp_path, server, GITHUB_REF="refs/tags/v1.2.0", GGUF_HARNESS_RELEASE="true")
    assert run_action(_report(tmp_path), env, out=io.StringIO()) == 0
    assert run_action(_report(tmp_path), env, out=io.StringIO()) == 0
    writes = [(r.method, r.path) for r in server.writes() if "releases" in r.path]
    (release,) = server.releases.values()
    assert writes == [
        ("POST", "/repos/octo/models/releases"),
        ("PATCH", f"/repos/octo/models/releases/{release['id']}"),
    ]
    created = next(r.body for r in server.writes() if r.method == "POST" and "releases" in r.path)
    assert (created["tag_name"], created["name"]) == ("v1.2.0", "v1.2.0")
    body = release["body"]
    assert body.startswith("## v1.2.0: gguf-harness: ✅ 1 model passed")
    assert "xychart-beta" in body
    notes_json = body.split("```json\n", 1)[1].split("\n```", 1)[0]
    assert json.loads(notes_json) == DIGESTS
    outputs = parse_outputs((tmp_path / "out").read_text())
    assert json.loads(outputs["digests"]) == DIGESTS and outputs["passed"] == "true"
    # A push, not a pull request: no comment; the check run sits on GITHUB_SHA.
    assert not server.comments
    assert {run["head_sha"] for run in server.check_runs.values()} == {"e" * 40}


def test_no_release_unless_asked_or_tagged(tmp_path: Path, server: GitHubServer) -> None:
    run_action(
        _report(tmp_path), _env(tmp_path, server, GITHUB_REF="refs/tags/v1"), out=io.StringIO()
    )
    run_action(
        _report(tmp_path),
        _env(tmp_path, server, GITHUB_REF="refs/heads/main", GGUF_HARNESS_RELEASE="true"),
        out=io.StringIO(),
    )
    assert not server.releases


def test_matrix_cell_check_run_and_exit_status(tmp_path: Path, server: GitHubServer) -> None:
    env = _env(tmp_path, server, GGUF_HARNESS_ONLY="smollm2:q4", GGUF_HARNESS_CHECK_NAME="models")
    assert run_action(_report(tmp_path, passed=False), env, out=io.StringIO()) == 1
    (run,) = server.check_runs.values()
    assert (run["name"], run["conclusion"]) == ("models (smollm2:q4)", "failure")
    env["GGUF_HARNESS_FAIL_ON_ERROR"] = "false"
    assert run_action(_report(tmp_path, passed=False), env, out=io.StringIO()) == 0


def test_refused_token_is_a_warning(tmp_path: Path, server: GitHubServer) -> None:
    env = _env(tmp_path, server, GGUF_HARNESS_GITHUB_TOKEN="wrong")
    out = io.StringIO()
    assert run_action(_report(tmp_path), env, out=out) == 0
    assert (
        "::warning title=gguf-harness::check run not written: HTTP 401 Bad credentials"
        in out.getvalue()
    )
    assert not server.check_runs


def test_without_a_token_nothing_is_sent(tmp_path: Path, server: GitHubServer) -> None:
    env = _env(tmp_path, server, GGUF_HARNESS_GITHUB_TOKEN="")
    assert run_action(_report(tmp_path), env, out=io.StringIO()) == 0
    assert server.requests == []
    assert (tmp_path / "summary").read_text().startswith("## gguf-harness: ✅")


def test_missing_report(tmp_path: Path, server: GitHubServer) -> None:
    env = _env(tmp_path, server, GGUF_HARNESS_TEST_EXIT="4")
    out = io.StringIO()
    assert run_action(tmp_path / "none.json", env, out=out) == 1
    assert "the test step exited 4" in out.getvalue()
    assert "❌ no report" in (tmp_path / "summary").read_text()
    assert parse_outputs((tmp_path / "out").read_text())["passed"] == "false"
    assert server.requests == []
