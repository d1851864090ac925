"""action.yml and the workflows checked against GitHub Actions' metadata rules.

Two checks: SchemaStore's schemas for action metadata and workflows, as check-jsonschema
vendors them (``vendor.github-actions``, ``vendor.github-workflows``), and the rules below,
written out here because no schema can say them: a composite action's ``run:`` never holds
``${{ }}`` (inputs reach scripts through ``env:``, or an input becomes shell code), every
``inputs.*`` and ``steps.*`` an expression names exists (a step only names earlier steps),
inputs are kebab-case as in the docker/* actions, every input is used, and a workflow's
``uses: ./`` passes only inputs the action declares.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.action_runner import evaluate, expressions

ROOT = Path(__file__).resolve().parents[1]
ACTION = ROOT / "action.yml"
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))

# The Actions metadata syntax for a composite action (docs: "Metadata syntax for GitHub
# Actions"), as a JSON schema: what GitHub itself refuses or ignores.
COMPOSITE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "description", "runs"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string", "minLength": 1},
        "author": {"type": "string"},
        "branding": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"icon": {"type": "string"}, "color": {"type": "string"}},
        },
        "inputs": {
            "type": "object",
            "propertyNames": {"pattern": "^[a-z][a-z0-9]*(-[a-z0-9]+)*$"},
            "additionalProperties": {
                "type": "object",
                "required": ["description"],
                "additionalProperties": False,
                "properties": {
                    "description": {"type": "string", "minLength": 1},
                    "required": {"type": "boolean"},
                    "default": {"type": "string"},
                    "deprecationMessage": {"type": "string"},
                },
            },
        },
        "outputs": {
            "type": "object",
            "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_-]*$"},
            "additionalProperties": {
                "type": "object",
                "required": ["description", "value"],
                "additionalProperties": False,
                "properties": {"description": {"type": "string"}, "value": {"type": "string"}},
            },
        },
        "runs": {
            "type": "object",
            "required": ["using", "steps"],
            "additionalProperties": False,
            "properties": {
                "using": {"const": "composite"},
                "steps": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/step"}},
            },
        },
    },
    "$defs": {
        "step": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "id": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_-]*$"},
                "name": {"type": "string"},
                "if": {"type": ["string", "boolean"]},
                "run": {"type": "string", "minLength": 1},
                "shell": {"type": "string", "minLength": 1},
                "uses": {"type": "string", "pattern": r"^(\./|[\w.-]+/[\w./-]+@[\w.-]+$)"},
                "with": {"type": "object"},
                "env": {"type": "object", "additionalProperties": {"type": "string"}},
                "working-directory": {"type": "string"},
                "continue-on-error": {"type": ["string", "boolean"]},
            },
            "oneOf": [
                {"required": ["run", "shell"], "not": {"required": ["uses"]}},
                {
                    "required": ["uses"],
                    "not": {"anyOf": [{"required": ["run"]}, {"required": ["shell"]}]},
                },
            ],
        }
    },
}


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def rule_problems(action: dict[str, Any]) -> list[str]:
    """Every violation of the rules above: schema first, then what a schema cannot say."""
    validator = jsonschema.Draft202012Validator(COMPOSITE_SCHEMA)
    problems = [
        f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in validator.iter_errors(action)
    ]
    if problems:
        return problems
    inputs = set(action.get("inputs") or {})
    used: set[str] = set()
    seen_ids: list[str] = []

    def names(text: str, where: str, earlier: list[str]) -> None:
        for expr in expressions(text):
            for name in re.findall(r"\binputs\.([\w-]+)", expr):
                used.add(name)
                if name not in inputs:
                    problems.append(f"{where}: no input named {name!r}")
            for step in re.findall(r"\bsteps\.([\w-]+)", expr):
                if step not in earlier:
                    problems.append(f"{where}: no earlier step with id {step!r}")

    for name, spec in (action.get("inputs") or {}).items():
        names(str(spec.get("default", "")), f"inputs.{name}.default", [])
    for number, step in enumerate(action["runs"]["steps"]):
        where = f"runs.steps[{number}]"
        if "run" in step and "${{" in step["run"]:
            problems.append(f"{where}.run: holds ${{{{ }}}}; pass it through env:")
        condition = step.get("if")
        if isinstance(condition, str):
            names("${{ " + condition + " }}", f"{where}.if", seen_ids)
        for key in ("env", "with"):
            for name, value in (step.get(key) or {}).items():
                names(str(value), f"{where}.{key}.{name}", seen_ids)
        names(str(step.get("working-directory", "")), f"{where}.working-directory", seen_ids)
        if "id" in step:
            if step["id"] in seen_ids:
                problems.append(f"{where}: id {step['id']!r} is used twice")
            seen_ids.append(step["id"])
    for name, spec in (action.get("outputs") or {}).items():
        names(str(spec["value"]), f"outputs.{name}", seen_ids)
    problems += [f"inputs.{name}: never used" for name in sorted(inputs - used)]
    return problems


def test_action_follows_the_metadata_rules() -> None:
    assert rule_problems(_load(ACTION)) == []


def test_the_rules_catch_what_they_are_for() -> None:
    action = _load(ACTION)
    injected = copy.deepcopy(action)
    injected["runs"]["steps"][-2]["run"] += 'echo "${{ inputs.models }}"\n'
    assert any("holds ${{ }}" in p for p in rule_problems(injected))
    no_shell = copy.deepcopy(action)
    del no_shell["runs"]["steps"][1]["shell"]
    assert rule_problems(no_shell)
    camel = copy.deepcopy(action)
    camel["inputs"]["pythonVersion"] = camel["inputs"].pop("python-version")
    assert any("pythonVersion" in p for p in rule_problems(camel))
    dangling = copy.deepcopy(action)
    dangling["outputs"]["passed"]["value"] = "${{ steps.nope.outputs.passed }}"
    assert any("no earlier step with id 'nope'" in p for p in rule_problems(dangling))
    no_value = copy.deepcopy(action)
    del no_value["outputs"]["report"]["value"]
    assert any("'value' is a required property" in p for p in rule_problems(no_value))


def test_every_expression_is_one_the_simulated_runner_reads() -> None:
    # tests/test_action_run.py runs action.yml with tests/action_runner.py; an expression it
    # could not evaluate would make that proof hollow.
    context = {"__status__": lambda name: True}
    action = _load(ACTION)
    found = [expr for text in _strings(action) for expr in expressions(text)]
    found += [str(s["if"]) for s in action["runs"]["steps"] if "if" in s]
    assert len(found) > 20
    for expr in found:
        evaluate(expr, context)


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def _check_jsonschema(schema: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("check_jsonschema", reason="pip install check-jsonschema")
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_action_against_schemastore() -> None:
    done = _check_jsonschema("vendor.github-actions", ACTION)
    assert done.returncode == 0, done.stdout + done.stderr


def test_workflows_against_schemastore() -> None:
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "models.yml"}
    done = _check_jsonschema("vendor.github-workflows", *WORKFLOWS)
    assert done.returncode == 0, done.stdout + done.stderr


def test_workflows_use_the_action_as_declared() -> None:
    inputs = set(_load(ACTION)["inputs"])
    outputs = set(_load(ACTION)["outputs"])
    local = 0
    for path in WORKFLOWS:
        text = path.read_text()
        for job in _load(path)["jobs"].values():
            ids = {s.get("id"): s for s in job.get("steps", []) if s.get("uses") == "./"}
            for step_id, step in ids.items():
                local += 1
                assert set(step.get("with") or {}) <= inputs, path.name
                for name in re.findall(rf"steps\.{step_id}\.outputs\.([\w-]+)", text):
                    assert name in outputs, f"{path.name}: the action has no output {name!r}"
    assert local >= 1  # the example model workflow runs this repository's action
