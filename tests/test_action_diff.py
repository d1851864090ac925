"""The PR comment shows each model against the tag it currently publishes to, on a real registry.

A model is published (``test --publish``), then changed (Q8_0 -> Q4_0): ``test
--diff-published`` records what changed before anything is published, and the action's sticky
comment on the pull request (tests/github_server.py) carries the size, BPW and RAM lines. A model
never published says "first publication"; one whose registry is down says so in one line and
the run still passes; an unchanged one is "the same model" without its layers being pulled.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from gguf import GGMLQuantizationType as T
from gguf import LlamaFileType

from harness.action import run_action
from tests.gguf_files import write_model
from tests.github_server import github_server
from tests.services import Registry, free_port

pytestmark = pytest.mark.component("registry")

PACKERFILE = 'FROM scratch\nCOPY m.gguf /app/\nCMD ["-m", "/app/m.gguf", "-c", "256"]\n'
PR = 12


def _model(repo: Path, name: str, reference: str) -> Path:
    directory = repo / "models" / name
    directory.mkdir(parents=True)
    write_model(directory / "m.gguf")  # Q8_0
    (directory / "GGUFPackerfile").write_text(PACKERFILE)
    (directory / "model.yaml").write_text(
        f"schemaVersion: 1\nname: {name}\nexpect:\n  architecture: llama\n"
        f"publish:\n  references: [{reference}]\n  tags: [v1]\n"
    )
    return directory


def _test(repo: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "harness", "test", "models", "-q", "-p", "no:cacheprovider", *args],
        capture_output=True,
        text=True,
        cwd=repo,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_the_pr_comment_shows_each_model_against_its_published_tag(
    tmp_path: Path,
    registry: Registry,
    registry_factory: Callable[..., Registry],
    no_user_credentials: None,
) -> None:
    repo = tmp_path / "repo"
    changed = _model(repo, "tiny", f"{registry.host}/diff/tiny")
    env = {
        **os.environ,
        "GGUF_HARNESS_CACHE": str(tmp_path / "cache"),
        "GGUF_HARNESS_STORE": str(tmp_path / "store"),
        "NO_PROXY": "127.0.0.1",
    }
    said = _test(repo, env, "--publish")
    assert f"tiny: {registry.host}/diff/tiny:v1 sha256:" in said

    # Nothing read but the manifest for an unchanged model.
    same = _test(repo, env, "--diff-published")
    assert f"tiny: against {registry.host}/diff/tiny:v1: the same model as published" in same
    assert not (tmp_path / "store").exists()

    # The change under review, and three more models: never published, a registry that is down,
    # one that wants credentials this run does not have.
    (changed / "m.gguf").unlink()
    write_model(changed / "m.gguf", weight_type=T.Q4_0, file_type=LlamaFileType.MOSTLY_Q4_0)
    _model(repo, "new", f"{registry.host}/diff/new")
    _model(repo, "offline", f"127.0.0.1:{free_port()}/diff/offline")
    _model(repo, "locked", f"{registry_factory(auth=True).host}/diff/locked")
    report = tmp_path / "report.json"
    said = _test(repo, env, "--diff-published", "--harness-report", str(report))
    assert f"tiny: against {registry.host}/diff/tiny:v1: file type Q8_0 -> Q4_0, size -" in said

    models = {m["name"]: m for m in json.loads(report.read_text())["models"]}
    diff = models["tiny"]["diff"]
    assert diff["state"] == "changed"
    changes = {c["what"]: c for c in diff["changes"]}
    assert (changes["BPW"]["before"], changes["BPW"]["after"]) == ("11.891", "9.656")
    assert changes["size"]["delta"].startswith("-") and changes["RAM"]["delta"].startswith("-")
    assert models["new"]["diff"]["state"] == "first publication"
    offline = models["offline"]["diff"]
    assert offline["state"] == "unavailable" and offline["note"].startswith("cannot read it: ")
    locked = models["locked"]["diff"]
    assert locked["state"] == "unavailable" and locked["note"].startswith("not authorized to read")

    with github_server() as server:
        event = tmp_path / "event.json"
        event.write_text(json.dumps({"pull_request": {"number": PR, "head": {"sha": "a" * 40}}}))
        env_action = {
            "GITHUB_EVENT_PATH": str(event),
            "GITHUB_REPOSITORY": server.repository,
            "GITHUB_API_URL": server.url,
            "GITHUB_JOB": "models",
            "GGUF_HARNESS_GITHUB_TOKEN": server.token,
            "GGUF_HARNESS_GITHUB_WRITE_DELAY": "0",
            "GGUF_HARNESS_CHECK_RUN": "false",
        }
        out = io.StringIO()
        assert run_action(report, env_action, out=out) == 0
        assert "::warning" not in out.getvalue()
        (comment,) = server.comments[PR]
    body = comment["body"]
    head = f"**Against the published `{registry.host}/diff/tiny:v1`:** file type Q8_0 -> Q4_0"
    assert head in body
    assert "| what | published | this build | change |" in body
    assert "| file type | `Q8_0` | `Q4_0` |  |" in body
    assert "| BPW | `11.891` | `9.656` |  |" in body
    size, ram = changes["size"], changes["RAM"]
    assert f"| size | `{size['before']}` | `{size['after']}` | {size['delta']} |" in body
    assert f"| RAM | `{ram['before']}` | `{ram['after']}` | {ram['delta']} |" in body
    assert f"**Against the published `{registry.host}/diff/new:v1`:** first publication" in body
    assert "/diff/offline:v1`:** not compared: cannot read it: " in body
    assert "/diff/locked:v1`:** not compared: not authorized to read it: " in body
