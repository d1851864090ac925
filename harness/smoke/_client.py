"""The few HTTP calls the harness makes to a local server (standard library only), and the
OpenAI-compatible answers read into records.

Proxies from the environment are ignored: the server is on loopback, and a proxy would turn a
dead server into a proxy error page.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from harness.errors import SmokeError

from ._records import Answer, Timings

__all__ = [
    "HttpReply",
    "RequestFailed",
    "completion_answer",
    "embedding_vectors",
    "get",
    "post_json",
]

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class HttpReply:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def error_text(self) -> str:
        """The server's own error message (OpenAI shape or llama-server's), else the body."""
        try:
            data = self.json()
        except ValueError:
            return self.body.decode("utf-8", errors="replace").strip()[:500]
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(data, dict) and data.get("detail"):
            return str(data["detail"])
        return json.dumps(data)[:500]


class RequestFailed(Exception):
    """No HTTP answer at all: refused, reset, or no reply within the timeout."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


def get(url: str, timeout: float) -> HttpReply:
    return _send(urllib.request.Request(url, method="GET"), timeout)


def post_json(url: str, payload: dict[str, Any], timeout: float) -> HttpReply:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    return _send(request, timeout)


def _send(request: urllib.request.Request, timeout: float) -> HttpReply:
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return HttpReply(int(response.status), response.read())
    except urllib.error.HTTPError as error:
        with error:
            return HttpReply(int(error.code), error.read())
    except TimeoutError as error:
        raise RequestFailed(f"no answer within {timeout:g} s", timed_out=True) from error
    except urllib.error.URLError as error:
        reason = error.reason
        timed_out = isinstance(reason, TimeoutError)
        raise RequestFailed(str(reason), timed_out=timed_out) from error
    except (OSError, http.client.HTTPException) as error:
        raise RequestFailed(str(error) or type(error).__name__) from error


def completion_answer(data: dict[str, Any], seconds: float, timings: Timings | None) -> Answer:
    """A ``/v1/chat/completions`` or ``/v1/completions`` answer (its first choice)."""
    choice = (data.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    text = message.get("content") if "message" in choice else choice.get("text")
    usage = data.get("usage") or {}
    return Answer(
        text=str(text or ""),
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        seconds=seconds,
        timings=timings,
        raw=data,
    )


def embedding_vectors(data: dict[str, Any], count: int) -> list[list[float]]:
    """The vectors of a ``/v1/embeddings`` answer, in input order; one per input or an error."""
    items = sorted(data.get("data") or [], key=lambda d: int(d.get("index", 0)))
    vectors = [d.get("embedding") for d in items]
    if len(vectors) != count or not all(_is_vector(v) for v in vectors):
        raise SmokeError(f"/v1/embeddings answered no vector per input: {str(data)[:300]}")
    return [[float(x) for x in v] for v in vectors]


def _is_vector(value: Any) -> bool:
    return (
        isinstance(value, list) and bool(value) and all(isinstance(x, int | float) for x in value)
    )
