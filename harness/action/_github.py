"""GitHub through PyGithub: a check run with every annotation, a sticky PR comment, a release.

Each function takes a PyGithub ``Repository`` so that one client (and its rate limiting) serves
them all; ``repository`` builds it from the runner's environment (``GITHUB_API_URL``, so GitHub
Enterprise and the tests' loopback server work the same).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from github import Auth, Github, GithubException, UnknownObjectException
from github.Repository import Repository

from harness.action._annotations import Annotation, check_run_annotations

__all__ = [
    "CheckRunResult",
    "CommentResult",
    "ReleaseResult",
    "create_check_run",
    "marker",
    "repository",
    "upsert_comment",
    "upsert_release",
]

_SUMMARY_LIMIT = 65_535  # the Checks API's limit on output.summary and output.text


@dataclass(frozen=True)
class CheckRunResult:
    id: int
    annotations: int
    requests: int  # one create and an update per further batch of 50


@dataclass(frozen=True)
class CommentResult:
    id: int
    created: bool  # False: an earlier comment was edited in place


@dataclass(frozen=True)
class ReleaseResult:
    id: int
    created: bool


def repository(
    api_url: str, full_name: str, token: str, *, write_delay: float = 1.0, timeout: int = 30
) -> Repository:
    """The repository ``owner/name`` through the REST API at ``api_url``, without a request.

    ``write_delay`` is the pause between writes GitHub asks integrations to keep (its secondary
    rate limits); PyGithub enforces it.
    """
    client = Github(
        auth=Auth.Token(token),
        base_url=api_url.rstrip("/"),
        timeout=timeout,
        seconds_between_writes=write_delay,
        seconds_between_requests=min(write_delay, 0.25),
        lazy=True,
    )
    return client.get_repo(full_name)


def create_check_run(
    repo: Repository,
    *,
    name: str,
    head_sha: str,
    passed: bool,
    title: str,
    summary: str,
    found: Sequence[Annotation],
    details_url: str | None = None,
) -> CheckRunResult:
    """A completed check run carrying every annotation, 50 per request as the API allows."""
    batches = check_run_annotations(found)
    output: dict[str, Any] = {"title": title, "summary": summary[:_SUMMARY_LIMIT]}
    extra: dict[str, Any] = {"details_url": details_url} if details_url else {}
    run = repo.create_check_run(
        name,
        head_sha,
        status="completed",
        conclusion="success" if passed else "failure",
        output={**output, "annotations": batches[0]} if batches else output,
        **extra,
    )
    # Each update appends its annotations to those the run already has.
    for batch in batches[1:]:
        run.edit(output={**output, "annotations": batch})
    return CheckRunResult(run.id, len(found), max(1, len(batches)))


def marker(key: str) -> str:
    """The hidden line that finds this action's comment again (one per key, e.g. per job)."""
    safe = "".join(c if c.isalnum() or c in "-_.:/" else "-" for c in key) or "default"
    return f"<!-- gguf-harness:sticky:{safe} -->"


def upsert_comment(repo: Repository, number: int, body: str, key: str) -> CommentResult:
    """Edit the pull request's comment carrying ``marker(key)``, or add one."""
    tag = marker(key)
    text = f"{tag}\n{body}"
    issue = repo.get_issue(number)
    for comment in issue.get_comments():
        if tag in (comment.body or ""):
            comment.edit(text)
            return CommentResult(comment.id, created=False)
    created = issue.create_comment(text)
    return CommentResult(created.id, created=True)


def upsert_release(
    repo: Repository, tag: str, body: str, *, name: str | None = None
) -> ReleaseResult:
    """The release of ``tag`` with ``body`` as its notes: created, or its notes replaced."""
    title = name or tag
    try:
        release = repo.get_release(tag)
    except UnknownObjectException:
        created = repo.create_git_release(tag, name=title, message=body)
        return ReleaseResult(created.id, created=True)
    except GithubException:
        raise
    release.update_release(
        name=release.name or title,
        message=body,
        draft=release.draft,
        prerelease=release.prerelease,
    )
    return ReleaseResult(release.id, created=False)
