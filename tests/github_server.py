"""A small GitHub REST API on 127.0.0.1 for the action's tests: what PyGithub calls, recorded.

GitHub itself is out of reach here, so ``GitHubServer`` implements the endpoints the action
uses, with GitHub's JSON shapes as far as PyGithub reads them:

- check runs: ``POST /repos/{o}/{r}/check-runs``, ``PATCH .../check-runs/{id}`` (annotations of
  each request are appended, as GitHub does), ``GET .../check-runs/{id}/annotations``;
- issue comments: ``GET /repos/{o}/{r}/issues/{n}`` and ``.../issues/{n}/comments`` (paginated
  with ``per_page``/``page`` and a ``Link`` header), ``POST`` there, ``PATCH
  .../issues/comments/{id}``;
- releases: ``GET .../releases/tags/{tag}`` (404 until created), ``POST .../releases``,
  ``PATCH .../releases/{id}``;
- ``GET /repos/{o}/{r}``.

Every request is recorded (method, path, query, JSON body) in ``requests``; a wrong token is
answered 401. GitHub's limits that the action must respect are enforced: at most 50
annotations per check-run request, 65,536 characters in a comment body or check-run summary.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["GitHubServer", "Recorded", "github_server"]

Reply = tuple[int, Any, dict[str, str]]  # status, JSON body, extra headers
_ANNOTATIONS_PER_REQUEST = 50
_BODY_LIMIT = 65_536


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    body: Any


@dataclass
class GitHubServer:
    repository: str  # owner/name
    token: str
    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    check_runs: dict[int, dict[str, Any]] = field(default_factory=dict)
    annotations: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # issue -> comments
    releases: dict[int, dict[str, Any]] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=lambda: iter(range(1000, 10**9)))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_comment(self, issue: int, body: str, user: str = "someone") -> dict[str, Any]:
        """A comment that was there before the action ran."""
        with self._lock:
            return self._new_comment(issue, body, user)

    def writes(self) -> list[Recorded]:
        return [r for r in self.requests if r.method != "GET"]

    # --- routing --------------------------------------------------------------------------------

    def handle(self, method: str, path: str, body: Any, query: dict[str, str]) -> Reply:
        prefix = f"/repos/{self.repository}"
        if not path.startswith(prefix):
            return 404, {"message": "Not Found"}, {}
        rest = path[len(prefix) :]
        for pattern, verb, handler in self._routes():
            found = re.fullmatch(pattern, rest)
            if found and verb == method:
                with self._lock:
                    reply: Reply = handler(body, query, *found.groups())
                    return reply
        return 404, {"message": "Not Found"}, {}

    def _routes(self) -> list[tuple[str, str, Any]]:
        return [
            (r"", "GET", self._repo),
            (r"/check-runs", "POST", self._create_check_run),
            (r"/check-runs/(\d+)", "PATCH", self._update_check_run),
            (r"/check-runs/(\d+)/annotations", "GET", self._list_annotations),
            (r"/issues/(\d+)", "GET", self._issue),
            (r"/issues/(\d+)/comments", "GET", self._list_comments),
            (r"/issues/(\d+)/comments", "POST", self._create_comment),
            (r"/issues/comments/(\d+)", "PATCH", self._edit_comment),
            (r"/releases/tags/(.+)", "GET", self._release_by_tag),
            (r"/releases", "POST", self._create_release),
            (r"/releases/(\d+)", "PATCH", self._update_release),
        ]

    def _api(self, rest: str) -> str:
        return f"{self.url}/repos/{self.repository}{rest}"

    def _repo(self, body: Any, query: dict[str, str]) -> Reply:
        owner, name = self.repository.split("/")
        repo = {"id": 1, "name": name, "full_name": self.repository, "url": self._api("")}
        return 200, {**repo, "owner": {"login": owner}}, {}

    # --- check runs -----------------------------------------------------------------------------

    def _create_check_run(self, body: Any, query: dict[str, str]) -> Reply:
        if not body.get("name") or not body.get("head_sha"):
            return 422, {"message": "name and head_sha are required"}, {}
        run_id = next(self._ids)
        self.check_runs[run_id] = {"id": run_id, "url": self._api(f"/check-runs/{run_id}")}
        self.annotations[run_id] = []
        return self._apply_check_run(run_id, body, 201)

    def _update_check_run(self, body: Any, query: dict[str, str], run_id: str) -> Reply:
        if int(run_id) not in self.check_runs:
            return 404, {"message": "Not Found"}, {}
        return self._apply_check_run(int(run_id), body, 200)

    def _apply_check_run(self, run_id: int, body: Any, status: int) -> Reply:
        output = body.get("output") or {}
        new = output.get("annotations") or []
        if len(new) > _ANNOTATIONS_PER_REQUEST:
            return 422, {"message": "at most 50 annotations per request"}, {}
        if len(output.get("summary") or "") > _BODY_LIMIT:
            return 422, {"message": "summary is too long"}, {}
        for annotation in new:
            missing = {"path", "start_line", "end_line", "annotation_level", "message"} - set(
                annotation
            )
            if missing:
                return 422, {"message": f"annotation lacks {sorted(missing)}"}, {}
        self.annotations[run_id] += new
        run = self.check_runs[run_id]
        run.update({k: v for k, v in body.items() if k != "output"})
        kept = {k: v for k, v in output.items() if k != "annotations"}
        count = len(self.annotations[run_id])
        run["output"] = {**run.get("output", {}), **kept, "annotations_count": count}
        return status, run, {}

    def _list_annotations(self, body: Any, query: dict[str, str], run_id: str) -> Reply:
        return 200, self.annotations.get(int(run_id), []), {}

    # --- issue comments -------------------------------------------------------------------------

    def _issue(self, body: Any, query: dict[str, str], number: str) -> Reply:
        issue = {"id": int(number), "number": int(number), "url": self._api(f"/issues/{number}")}
        return 200, {**issue, "comments_url": self._api(f"/issues/{number}/comments")}, {}

    def _new_comment(self, issue: int, text: str, user: str) -> dict[str, Any]:
        comment_id = next(self._ids)
        comment = {
            "id": comment_id,
            "body": text,
            "user": {"login": user, "type": "Bot"},
            "url": self._api(f"/issues/comments/{comment_id}"),
            "issue_url": self._api(f"/issues/{issue}"),
        }
        self.comments.setdefault(issue, []).append(comment)
        return comment

    def _list_comments(self, body: Any, query: dict[str, str], number: str) -> Reply:
        comments = self.comments.get(int(number), [])
        per_page = int(query.get("per_page", 30))
        page = int(query.get("page", 1))
        chunk = comments[(page - 1) * per_page : page * per_page]
        headers: dict[str, str] = {}
        if page * per_page < len(comments):
            url = self._api(f"/issues/{number}/comments?per_page={per_page}&page={page + 1}")
            headers["Link"] = f'<{url}>; rel="next"'
        return 200, chunk, headers

    def _create_comment(self, body: Any, query: dict[str, str], number: str) -> Reply:
        text = body.get("body") or ""
        if len(text) > _BODY_LIMIT:
            return 422, {"message": "body is too long (maximum is 65536 characters)"}, {}
        return 201, self._new_comment(int(number), text, "github-actions[bot]"), {}

    def _edit_comment(self, body: Any, query: dict[str, str], comment_id: str) -> Reply:
        text = body.get("body") or ""
        if len(text) > _BODY_LIMIT:
            return 422, {"message": "body is too long (maximum is 65536 characters)"}, {}
        for comments in self.comments.values():
            for comment in comments:
                if comment["id"] == int(comment_id):
                    comment["body"] = text
                    return 200, comment, {}
        return 404, {"message": "Not Found"}, {}

    # --- releases -------------------------------------------------------------------------------

    def _release_by_tag(self, body: Any, query: dict[str, str], tag: str) -> Reply:
        tag = urllib.parse.unquote(tag)
        for release in self.releases.values():
            if release["tag_name"] == tag:
                return 200, release, {}
        return 404, {"message": "Not Found"}, {}

    def _create_release(self, body: Any, query: dict[str, str]) -> Reply:
        if any(r["tag_name"] == body.get("tag_name") for r in self.releases.values()):
            return 422, {"message": "Validation Failed: already_exists"}, {}
        release_id = next(self._ids)
        release = {
            "id": release_id,
            "url": self._api(f"/releases/{release_id}"),
            "upload_url": self._api(f"/releases/{release_id}/assets{{?name,label}}"),
            "draft": False,
            "prerelease": False,
            **body,
        }
        self.releases[release_id] = release
        return 201, release, {}

    def _update_release(self, body: Any, query: dict[str, str], release_id: str) -> Reply:
        release = self.releases.get(int(release_id))
        if release is None:
            return 404, {"message": "Not Found"}, {}
        release.update(body)
        return 200, release, {}


def _handler(server: GitHubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            parsed = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(parsed.query))
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else {}
            server.requests.append(Recorded(self.command, parsed.path, query, body))
            auth = self.headers.get("Authorization", "")
            reply: Reply = (401, {"message": "Bad credentials"}, {})
            if auth in (f"token {server.token}", f"Bearer {server.token}"):
                reply = server.handle(self.command, parsed.path, body, query)
            status, payload, headers = reply
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the recorded requests are the log

    return Handler


@contextmanager
def github_server(
    repository: str = "octo/models", token: str = "test-token"
) -> Iterator[GitHubServer]:
    """Serve a fresh ``GitHubServer`` on 127.0.0.1 (a free port) for the block's duration."""
    state = GitHubServer(repository, token)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
