"""model.yaml's smoke checks as records: what to ask a server and what its answer must show.

A check's request is deterministic unless it says otherwise: temperature 0 and seed 42 by
default, at most 128 tokens, and its timeout bounds the request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from harness.errors import Location, SpecError

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_SEED",
    "DEFAULT_TIMEOUT",
    "CheckKind",
    "EmbeddingExpect",
    "Message",
    "SimilarityBound",
    "SmokeCheck",
    "TextExpect",
]

CheckKind = Literal["chat", "completion", "embedding"]
DEFAULT_SEED = 42
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_TOKENS = 128


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class TextExpect:
    regex: str | None = None
    not_regex: str | None = None
    contains: tuple[str, ...] = ()
    finish_reason: str | None = None
    min_tokens: int | None = None  # of the answer (completion tokens)
    max_tokens: int | None = None
    json: bool | None = None


@dataclass(frozen=True)
class SimilarityBound:
    a: str
    b: str
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class EmbeddingExpect:
    dimension: int | None = None
    normalized: bool | None = None
    similar: tuple[SimilarityBound, ...] = ()


@dataclass(frozen=True)
class SmokeCheck:
    name: str
    kind: CheckKind
    messages: tuple[Message, ...]  # chat: the conversation, ``system`` first when given
    prompt: str | None  # completion
    input: tuple[str, ...]  # embedding
    max_tokens: int
    temperature: float
    seed: int
    timeout: float
    expect: TextExpect | EmbeddingExpect
    location: Location | None = None
    description: str | None = None
    marks: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], location: Location | None = None) -> SmokeCheck:
        """One item of model.yaml's ``smoke.checks``, already checked against the schema."""
        try:
            return _parse(data, location)
        except (KeyError, TypeError, ValueError) as error:
            raise SpecError(f"smoke check: {error}", location) from None


def _parse(data: Mapping[str, Any], location: Location | None) -> SmokeCheck:
    kind = cast(CheckKind, data.get("kind", "chat"))
    if kind not in ("chat", "completion", "embedding"):
        raise ValueError(f"unknown kind {kind!r}")
    expect = data.get("expect") or {}
    messages: list[Message] = []
    if kind == "chat":
        if data.get("system") is not None:
            messages.append(Message("system", str(data["system"])))
        if data.get("messages"):
            messages += [Message(str(m["role"]), str(m["content"])) for m in data["messages"]]
        else:
            messages.append(Message("user", str(data["prompt"])))
    raw_input = data.get("input", ())
    inputs = (raw_input,) if isinstance(raw_input, str) else tuple(str(t) for t in raw_input)
    if kind == "embedding":
        bounds = tuple(
            SimilarityBound(str(p["a"]), str(p["b"]), p.get("min"), p.get("max"))
            for p in expect.get("similar", ())
        )
        expectation: TextExpect | EmbeddingExpect = EmbeddingExpect(
            expect.get("dimension"), expect.get("normalized"), bounds
        )
    else:
        contains = expect.get("contains", ())
        expectation = TextExpect(
            expect.get("regex"),
            expect.get("not_regex"),
            (contains,) if isinstance(contains, str) else tuple(contains),
            expect.get("finish_reason"),
            expect.get("min_tokens"),
            expect.get("max_tokens"),
            expect.get("json"),
        )
    return SmokeCheck(
        name=str(data["name"]),
        kind=kind,
        messages=tuple(messages),
        prompt=str(data["prompt"]) if kind == "completion" else None,
        input=inputs,
        max_tokens=int(data.get("max_tokens", DEFAULT_MAX_TOKENS)),
        temperature=float(data.get("temperature", 0.0)),
        seed=int(data.get("seed", DEFAULT_SEED)),
        timeout=float(data.get("timeout", DEFAULT_TIMEOUT)),
        expect=expectation,
        location=location,
        description=data.get("description"),
        marks=tuple(data.get("marks", ())),
    )
