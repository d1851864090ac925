"""A stand-in for the GitHub runner: runs a composite action's ``run:`` steps as GitHub does.

What the runner does with a composite action, and what this reproduces: each step's ``if:`` is
an expression (default: every earlier step succeeded); ``${{ }}`` in ``env:``,
``working-directory:`` and the outputs is evaluated against ``inputs`` (with the action's
defaults, themselves expressions), ``steps.<id>.outputs``, ``github``, ``runner`` and ``env``;
a ``run:`` step is written to a file and run as ``bash --noprofile --norc -eo pipefail FILE``
with ``GITHUB_OUTPUT`` and ``GITHUB_STEP_SUMMARY`` files of its own, whose outputs (``NAME=V``
and ``NAME<<DELIM`` blocks) become ``steps.<id>.outputs``. ``uses:`` steps cannot run here:
their outputs, and those of steps the test replaces (installing the harness), come from
``stubs``. The ``run:`` text is never expanded: an action that inlined ``${{ }}`` into a
script would run it literally, and fail.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["StepResult", "evaluate", "expressions", "parse_outputs", "run_composite"]

_EXPR = re.compile(r"\$\{\{(.*?)\}\}", re.S)
_TOKEN = re.compile(r"\s*(?:(==|!=|&&|\|\||!|\(|\)|,)|'((?:[^']|'')*)'|([A-Za-z_][\w.\-]*))")


@dataclass
class StepResult:
    id: str | None
    ran: bool
    outcome: str  # success | failure | skipped
    stdout: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    summary: str = ""


def expressions(text: str) -> list[str]:
    """The expressions inside ``${{ }}`` in ``text``."""
    return [m.strip() for m in _EXPR.findall(text)]


def evaluate(expr: str, context: Mapping[str, Any]) -> Any:
    """A GitHub expression: context paths, 'strings', ==, !=, &&, ||, !, (), status functions."""
    tokens = [t for t in _TOKEN.findall(expr)]
    rest = _TOKEN.sub("", expr).strip()
    if rest:
        raise ValueError(f"cannot parse expression {expr!r} near {rest!r}")
    parser = _Parser(tokens, context)
    value = parser.or_()
    if parser.at < len(tokens):
        raise ValueError(f"trailing tokens in {expr!r}")
    return value


def interpolate(text: str, context: Mapping[str, Any]) -> str:
    def one(match: re.Match[str]) -> str:
        value = evaluate(match.group(1), context)
        return (
            "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        )

    return _EXPR.sub(one, text)


class _Parser:
    def __init__(self, tokens: list[tuple[str, str, str]], context: Mapping[str, Any]) -> None:
        self.tokens = tokens
        self.context = context
        self.at = 0

    def peek(self) -> str | None:
        return self.tokens[self.at][0] if self.at < len(self.tokens) else None

    def or_(self) -> Any:
        value = self.and_()
        while self.peek() == "||":
            self.at += 1
            other = self.and_()
            value = value if _truthy(value) else other
        return value

    def and_(self) -> Any:
        value = self.compare()
        while self.peek() == "&&":
            self.at += 1
            other = self.compare()
            value = other if _truthy(value) else value
        return value

    def compare(self) -> Any:
        value = self.unary()
        if self.peek() in ("==", "!="):
            op = self.tokens[self.at][0]
            self.at += 1
            equal = _norm(value) == _norm(self.unary())
            return equal if op == "==" else not equal
        return value

    def unary(self) -> Any:
        if self.peek() == "!":
            self.at += 1
            return not _truthy(self.unary())
        return self.primary()

    def primary(self) -> Any:
        op, string, name = self.tokens[self.at]
        self.at += 1
        if op == "(":
            value = self.or_()
            self.at += 1  # ")"
            return value
        if not name:
            return string.replace("''", "'")
        if self.peek() == "(":  # a status function: success(), always(), failure()
            self.at += 2
            return self.context["__status__"](name)
        if name in ("true", "false"):
            return name == "true"
        found: Any = self.context
        for part in name.split("."):
            found = found.get(part) if isinstance(found, Mapping) else None
        return found


def _truthy(value: Any) -> bool:
    return bool(value) and value != "false" if isinstance(value, str) else bool(value)


def _norm(value: Any) -> Any:
    if isinstance(value, bool):
        return str(value).lower()
    return value.lower() if isinstance(value, str) else ("" if value is None else value)


def parse_outputs(text: str) -> dict[str, str]:
    """A ``GITHUB_OUTPUT`` file: ``NAME=VALUE`` lines and ``NAME<<DELIM`` ... ``DELIM`` blocks."""
    outputs: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            end = lines.index(delimiter, i + 1)
            outputs[name] = "\n".join(lines[i + 1 : end])
            i = end + 1
            continue
        if "=" in line:
            name, value = line.split("=", 1)
            outputs[name] = value
        i += 1
    return outputs


def run_composite(
    action: Path,
    *,
    inputs: Mapping[str, str],
    github: Mapping[str, Any],
    runner: Mapping[str, str],
    env: Mapping[str, str],
    workspace: Path,
    stubs: Mapping[str, Mapping[str, str]],
) -> tuple[dict[str, str], list[StepResult]]:
    """Run ``action`` (its ``action.yml``'s steps); return its outputs and each step's result."""
    meta = yaml.safe_load(action.read_text())
    results: list[StepResult] = []
    steps: dict[str, dict[str, Any]] = {}
    base = {"github": github, "runner": runner, "env": env}
    resolved = {
        name: inputs.get(name, interpolate(str(spec.get("default", "")), base))
        for name, spec in (meta.get("inputs") or {}).items()
    }
    context: dict[str, Any] = {**base, "inputs": resolved, "steps": steps}

    def status(name: str) -> bool:
        failed = any(r.outcome == "failure" for r in results)
        return {"always": True, "success": not failed, "failure": failed, "cancelled": False}[name]

    context["__status__"] = status
    temp = Path(runner["temp"])
    for number, step in enumerate(meta["runs"]["steps"]):
        step_id = step.get("id")
        condition = str(step.get("if", "success()")).removeprefix("${{").removesuffix("}}")
        if not re.search(r"\b(success|always|failure|cancelled)\(", condition):
            condition = f"success() && ({condition})"  # GitHub's implicit status check
        if not _truthy(evaluate(condition, context)):
            results.append(StepResult(step_id, False, "skipped"))
            continue
        if "run" not in step or step_id in stubs:
            outputs = dict(stubs.get(step_id or "", {}))
            results.append(StepResult(step_id, False, "success", outputs=outputs))
        else:
            results.append(_run_step(number, step, context, env, workspace, temp, action.parent))
        if step_id:
            steps[step_id] = {"outputs": results[-1].outputs, "outcome": results[-1].outcome}
    outputs = {
        name: interpolate(str(spec.get("value", "")), context)
        for name, spec in (meta.get("outputs") or {}).items()
    }
    return outputs, results


def _run_step(
    number: int,
    step: Mapping[str, Any],
    context: Mapping[str, Any],
    env: Mapping[str, str],
    workspace: Path,
    temp: Path,
    action_path: Path,
) -> StepResult:
    assert step.get("shell") == "bash", "only bash steps are simulated"
    files = temp / f"step{number}"
    files.mkdir(parents=True, exist_ok=True)
    script = files / "script.sh"
    script.write_text(step["run"])  # as written: the runner never expands ${{ }} in a file
    output, summary = files / "output", files / "summary"
    output.touch()
    summary.touch()
    step_env = {
        **env,
        "GITHUB_ACTION_PATH": str(action_path),
        "GITHUB_OUTPUT": str(output),
        "GITHUB_STEP_SUMMARY": str(summary),
        **{k: interpolate(str(v), context) for k, v in (step.get("env") or {}).items()},
    }
    cwd = workspace / interpolate(str(step.get("working-directory", ".")), context)
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
        cwd=cwd,
        env=step_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return StepResult(
        step.get("id"),
        True,
        "success" if done.returncode == 0 else "failure",
        done.stdout + done.stderr,
        parse_outputs(output.read_text()),
        summary.read_text(),
    )
