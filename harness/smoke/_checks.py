"""Smoke checks run: ask the server what a check (harness.expect.SmokeCheck) asks, and judge
the answer. A check's timeout bounds its request (the server is restarted before the next request
if it is still busy with one that timed out).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence
from typing import Any

from harness.errors import SmokeError
from harness.expect import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_SEED,
    DEFAULT_TIMEOUT,
    EmbeddingExpect,
    SmokeCheck,
    TextExpect,
)

from ._records import Answer, Failure, SmokeResult
from ._server import Server

__all__ = ["DEFAULT_MAX_TOKENS", "DEFAULT_SEED", "DEFAULT_TIMEOUT", "SmokeCheck", "run_check"]

_NORM_TOLERANCE = 1e-3


def run_check(server: Server, check: SmokeCheck) -> SmokeResult:
    """Ask ``server`` what ``check`` asks and judge the answer; a failed request (HTTP error,
    crash, timeout) is a failed result carrying the server's own error and log tail."""
    since = server.log_offset()
    began = time.perf_counter()
    try:
        if check.kind == "embedding":
            assert isinstance(check.expect, EmbeddingExpect)
            return _embedding(server, check, check.expect, began)
        answer = _ask(server, check)
    except SmokeError as error:
        return SmokeResult(
            check.name, check.kind, False, str(error), None, {}, (), time.perf_counter() - began,
            error=str(error), log_tail=error.log_tail or server.log_tail(since=since),
            location=check.location,
        )  # fmt: skip
    assert isinstance(check.expect, TextExpect)
    failures = _judge_text(answer, check.expect)
    measured = {
        "finish_reason": answer.finish_reason,
        "completion_tokens": answer.completion_tokens,
        "prompt_tokens": answer.prompt_tokens,
        "seconds": round(answer.seconds, 3),
    }
    if answer.timings is not None:
        measured["generation_tokens_per_second"] = answer.timings.predicted_per_second
    return _result(check, failures, answer.text, measured, began, server, since, answer)


def _ask(server: Server, check: SmokeCheck) -> Answer:
    params = {
        "max_tokens": check.max_tokens,
        "temperature": check.temperature,
        "seed": check.seed,
    }
    if check.kind == "completion":
        assert check.prompt is not None
        return server.complete(check.prompt, timeout=check.timeout, **params)
    messages = [{"role": m.role, "content": m.content} for m in check.messages]
    return server.chat(messages, timeout=check.timeout, **params)


def _judge_text(answer: Answer, expect: TextExpect) -> list[Failure]:
    text, failures = answer.text, []
    if expect.regex is not None and not re.search(expect.regex, text):
        failures.append(Failure("expect.regex", f"no match for /{expect.regex}/"))
    if expect.not_regex is not None:
        found = re.search(expect.not_regex, text)
        if found:
            what = f"/{expect.not_regex}/ matched {found.group(0)!r}"
            failures.append(Failure("expect.not_regex", what))
    for index, part in enumerate(expect.contains):
        if part not in text:
            key = "expect.contains" if len(expect.contains) == 1 else f"expect.contains[{index}]"
            failures.append(Failure(key, f"does not contain {part!r}"))
    if expect.finish_reason is not None and answer.finish_reason != expect.finish_reason:
        what = f"finish_reason is {answer.finish_reason!r}, not {expect.finish_reason!r}"
        failures.append(Failure("expect.finish_reason", what))
    tokens = answer.completion_tokens
    bounds = (("min_tokens", expect.min_tokens, True), ("max_tokens", expect.max_tokens, False))
    for key, bound, low in bounds:
        if bound is None:
            continue
        if tokens is None:
            failures.append(Failure(f"expect.{key}", "the server reported no token count"))
        elif (tokens < bound) if low else (tokens > bound):
            word = "fewer" if low else "more"
            failures.append(Failure(f"expect.{key}", f"{tokens} tokens, {word} than {bound}"))
    if expect.json is not None:
        try:
            json.loads(text)
            valid = True
        except ValueError:
            valid = False
        if valid != expect.json:
            failures.append(Failure("expect.json", "not valid JSON" if expect.json else "is JSON"))
    return failures


def _embedding(
    server: Server, check: SmokeCheck, expect: EmbeddingExpect, began: float
) -> SmokeResult:
    since = server.log_offset()
    texts = list(dict.fromkeys([*check.input, *(t for b in expect.similar for t in (b.a, b.b))]))
    vectors = dict(zip(texts, server.embed(texts, timeout=check.timeout), strict=True))
    dimensions = sorted({len(v) for v in vectors.values()})
    norms = {t: math.sqrt(sum(x * x for x in v)) for t, v in vectors.items()}
    measured: dict[str, Any] = {"dimension": dimensions[0] if len(dimensions) == 1 else dimensions}
    measured["norms"] = {t: round(n, 6) for t, n in norms.items()}
    failures = []
    if expect.dimension is not None and dimensions != [expect.dimension]:
        what = f"dimension {measured['dimension']}, not {expect.dimension}"
        failures.append(Failure("expect.dimension", what))
    if expect.normalized is not None:
        unit = all(abs(n - 1.0) <= _NORM_TOLERANCE for n in norms.values())
        if unit != expect.normalized:
            worst = max(norms.values(), key=lambda n: abs(n - 1.0))
            what = (
                f"not unit length (a norm is {worst:.4f})" if expect.normalized else "unit length"
            )
            failures.append(Failure("expect.normalized", what))
    similarities = []
    for index, bound in enumerate(expect.similar):
        value = _cosine(vectors[bound.a], vectors[bound.b])
        similarities.append(round(value, 6))
        key = f"expect.similar[{index}]"
        pair = f"cosine({bound.a!r}, {bound.b!r}) = {value:.4f}"
        # A NaN (vectors of different lengths) fails both bounds.
        if bound.min is not None and not value >= bound.min:
            failures.append(Failure(f"{key}.min", f"{pair} < {bound.min}"))
        if bound.max is not None and not value <= bound.max:
            failures.append(Failure(f"{key}.max", f"{pair} > {bound.max}"))
    measured["similarities"] = similarities
    return _result(check, failures, None, measured, began, server, since, None)


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) != len(b):
        return float("nan")
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def _result(
    check: SmokeCheck,
    failures: list[Failure],
    text: str | None,
    measured: dict[str, Any],
    began: float,
    server: Server,
    since: int,
    answer: Answer | None,
) -> SmokeResult:
    passed = not failures
    if passed:
        message = f"{check.name}: passed" + (f": {_short(text)}" if text is not None else "")
    else:
        message = f"{check.name}: {failures[0].key}: {failures[0].message}"
        if text is not None:
            message += f"; answer: {_short(text)}"
    return SmokeResult(
        check.name, check.kind, passed, message, text, measured, tuple(failures),
        time.perf_counter() - began, log_tail="" if passed else server.log_tail(since=since),
        answer=answer, location=check.location,
    )  # fmt: skip


def _short(text: str, limit: int = 120) -> str:
    line = " ".join(text.split())
    return repr(line if len(line) <= limit else line[: limit - 3] + "...")
