"""The action's reporting step: after ``gguf-harness test``, tell GitHub what happened.

``run_action(report_path, env)`` reads the runner's environment (``env``, normally
``os.environ``) and the JSON report (or several, one per matrix cell, read as one run: a job
after the matrix shows every variant's quant ladder), then: appends the summary to
``$GITHUB_STEP_SUMMARY`` (without one, as on a laptop, prints the quant ladders),
prints the most important ``::error`` annotations, writes the ``passed``, ``report`` and
``digests`` outputs to ``$GITHUB_OUTPUT``, and, with a token, creates a check run, updates the
pull request's sticky comment and, on a tag, the release. A failing GitHub call (a fork's
read-only token) is a warning, not a failure of the step.

The variables it reads besides the runner's own ``GITHUB_*`` (action.yml sets them from its
inputs):

==================================  =========================================================
``GGUF_HARNESS_GITHUB_TOKEN``       token for the REST API; empty: no check run/comment/release
``GGUF_HARNESS_CHECK_RUN``          ``true`` (default): create a check run
``GGUF_HARNESS_CHECK_NAME``         its name (default ``gguf-harness``, `` (ONLY)`` appended)
``GGUF_HARNESS_COMMENT``            ``true`` (default): sticky comment on pull requests
``GGUF_HARNESS_COMMENT_KEY``        tells this job's comment from others' (default: JOB/ONLY)
``GGUF_HARNESS_ONLY``               the matrix cell (``NAME[:VARIANT]``) this job ran
``GGUF_HARNESS_RELEASE``            ``true``: on a tag, create or update its release
``GGUF_HARNESS_FAIL_ON_ERROR``      ``true`` (default): exit 1 when a check failed
``GGUF_HARNESS_TEST_EXIT``          the test step's exit status, shown when there is no report
``GGUF_HARNESS_GITHUB_WRITE_DELAY`` seconds between API writes (default 1, GitHub's advice)
==================================  =========================================================
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from harness.action._annotations import Annotation, workflow_commands
from harness.action._annotations import annotations as find_annotations
from harness.action._ladder import ladder_markdown, ladders
from harness.action._outputs import append_summary, write_outputs
from harness.action._records import Run, load_reports
from harness.action._summary import COMMENT_LIMIT, summary_markdown
from harness.errors import UsageError

__all__ = ["run_action"]

_RELEASE_LIMIT = 120_000  # GitHub refuses release notes over 125,000 characters


def run_action(
    report_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    env: Mapping[str, str],
    *,
    out: TextIO | None = None,
) -> int:
    """Report ``report_path`` to GitHub as described above; 0, or 1 when checks failed."""
    stream = out or sys.stdout
    paths = [report_path] if isinstance(report_path, str | os.PathLike) else list(report_path)

    def say(line: str) -> None:
        # Workflow commands are read from stdout, line by line, as they come.
        print(line, file=stream, flush=True)

    try:
        run: Run | None = load_reports(paths)
    except UsageError as error:
        run = None
        status = env.get("GGUF_HARNESS_TEST_EXIT", "")
        say(f"::error title=gguf-harness::{error} (the test step exited {status or '?'})")
    passed = run is not None and run.passed
    footer = _footer(env)
    summary_path = env.get("GITHUB_STEP_SUMMARY")
    if summary_path:
        text = summary_markdown(run, footer=footer) if run else _no_report(env)
        append_summary(summary_path, text)
    elif run is not None:
        for ladder in ladders(run):
            say(ladder_markdown(ladder, compact=True))
    found: list[Annotation] = []
    if run is not None:
        found = find_annotations(run, root=env.get("GITHUB_WORKSPACE") or None)
        for line in workflow_commands(found):
            say(line)
    output_path = env.get("GITHUB_OUTPUT")
    if output_path:
        digests = run.digests() if run else {}
        write_outputs(
            output_path,
            {
                "passed": "true" if passed else "false",
                "report": str(Path(paths[0]).absolute()),
                "digests": json.dumps(digests, sort_keys=True),
            },
        )
    if run is not None and env.get("GGUF_HARNESS_GITHUB_TOKEN"):
        _talk_to_github(run, found, env, footer, say)
    fail = _flag(env, "GGUF_HARNESS_FAIL_ON_ERROR", True)
    return 1 if fail and not passed else 0


def _talk_to_github(
    run: Run,
    found: list[Annotation],
    env: Mapping[str, str],
    footer: str,
    say: Callable[[str], None],
) -> None:
    # Imported here: PyGithub is only needed where there is a token to use it with.
    from github import GithubException

    from harness.action._github import (
        create_check_run,
        repository,
        upsert_comment,
        upsert_release,
    )

    repo_name = env.get("GITHUB_REPOSITORY", "")
    if not repo_name:
        say("::warning title=gguf-harness::GITHUB_REPOSITORY is not set; nothing sent to GitHub")
        return
    repo = repository(
        env.get("GITHUB_API_URL") or "https://api.github.com",
        repo_name,
        env["GGUF_HARNESS_GITHUB_TOKEN"],
        write_delay=float(env.get("GGUF_HARNESS_GITHUB_WRITE_DELAY") or 1.0),
    )
    event = _event(env)
    short = summary_markdown(run, limit=COMMENT_LIMIT, footer=footer)
    tasks: list[tuple[str, Callable[[], object]]] = []
    if _flag(env, "GGUF_HARNESS_CHECK_RUN", True):
        sha = _head_sha(event, env)
        name = env.get("GGUF_HARNESS_CHECK_NAME") or "gguf-harness"
        if env.get("GGUF_HARNESS_ONLY"):
            name += f" ({env['GGUF_HARNESS_ONLY']})"  # one check per matrix cell
        title = _title(run)
        tasks.append(
            (
                "check run",
                lambda: create_check_run(
                    repo,
                    name=name,
                    head_sha=sha,
                    passed=run.passed,
                    title=title,
                    summary=short,
                    found=found,
                    details_url=_run_url(env) or None,
                ),
            )
        )
    number = _pull_request(event)
    if number is not None and _flag(env, "GGUF_HARNESS_COMMENT", True):
        job = [env.get("GITHUB_JOB") or "gguf-harness", env.get("GGUF_HARNESS_ONLY") or ""]
        key = env.get("GGUF_HARNESS_COMMENT_KEY") or "/".join(part for part in job if part)
        tasks.append(("pull request comment", lambda: upsert_comment(repo, number, short, key)))
    tag = _tag(env)
    if tag is not None and _flag(env, "GGUF_HARNESS_RELEASE", False):
        notes = summary_markdown(
            run, limit=_RELEASE_LIMIT, footer=footer, title=f"{tag}: gguf-harness"
        )
        tasks.append(("release", lambda: upsert_release(repo, tag, _with_digests(notes, run))))
    for what, task in tasks:
        try:
            task()
        except GithubException as error:
            data = error.data if isinstance(error.data, dict) else {}
            reason = data.get("message") or error.message or ""
            say(f"::warning title=gguf-harness::{what} not written: HTTP {error.status} {reason}")
        except OSError as error:
            say(f"::warning title=gguf-harness::{what} not written: {error}")


def _with_digests(notes: str, run: Run) -> str:
    """Release notes end with the digests as JSON too, for scripts that read releases."""
    digests = run.digests()
    if not digests:
        return notes
    block = json.dumps(digests, indent=2, sort_keys=True)
    return (
        f"{notes}\n<details><summary>digests.json</summary>\n\n"
        f"```json\n{block}\n```\n\n</details>\n"
    )


def _title(run: Run) -> str:
    total, failed = len(run.models), len(run.failed_models)
    if run.passed:
        return f"{total} model{'s' if total != 1 else ''} passed"
    return f"{failed} of {total} model{'s' if total != 1 else ''} failed"


def _event(env: Mapping[str, str]) -> Mapping[str, Any]:
    path = env.get("GITHUB_EVENT_PATH")
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _pull_request(event: Mapping[str, Any]) -> int | None:
    pull = event.get("pull_request")
    number = pull.get("number") if isinstance(pull, Mapping) else None
    return number if isinstance(number, int) else None


def _head_sha(event: Mapping[str, Any], env: Mapping[str, str]) -> str:
    # On a pull request GITHUB_SHA is the merge commit; the check belongs on the head commit.
    pull = event.get("pull_request")
    head = pull.get("head") if isinstance(pull, Mapping) else None
    sha = head.get("sha") if isinstance(head, Mapping) else None
    return sha if isinstance(sha, str) and sha else env.get("GITHUB_SHA", "")


def _tag(env: Mapping[str, str]) -> str | None:
    ref = env.get("GITHUB_REF", "")
    return ref.removeprefix("refs/tags/") if ref.startswith("refs/tags/") else None


def _run_url(env: Mapping[str, str]) -> str:
    server, repo, run_id = (
        env.get(k, "") for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
    )
    return f"{server}/{repo}/actions/runs/{run_id}" if server and repo and run_id else ""


def _footer(env: Mapping[str, str]) -> str:
    url = _run_url(env)
    return f"<sub>[workflow run]({url}) · gguf-harness</sub>" if url else ""


def _no_report(env: Mapping[str, str]) -> str:
    status = env.get("GGUF_HARNESS_TEST_EXIT") or "?"
    return (
        "## gguf-harness: ❌ no report\n\n"
        f"`gguf-harness test` exited {status} without writing its JSON report; its log has "
        "the reason.\n"
    )


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name, "").strip().lower()
    if not value:
        return default
    return value in ("1", "true", "yes", "on")
