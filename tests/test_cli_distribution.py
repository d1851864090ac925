"""push, pull, list, inspect and remove as a user types them, against a real local registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.builder import BuildOptions, build
from tests.services import Registry
from tests.test_plugin import write_gguf

pytestmark = pytest.mark.component("registry")


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_push_pull_list_inspect_remove(
    tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = tmp_path / "context"
    context.mkdir()
    write_gguf(context / "tiny.gguf")
    (context / "GGUFPackerfile").write_text(
        'FROM scratch\nCOPY tiny.gguf /models/\nCMD ["-m", "/models/tiny.gguf"]\n'
    )
    env = {
        **os.environ,
        "GGUF_HARNESS_CACHE": str(tmp_path / "cache"),
        "GGUF_HARNESS_STORE": str(tmp_path / "store"),
    }
    monkeypatch.setenv("GGUF_HARNESS_CACHE", env["GGUF_HARNESS_CACHE"])
    build(BuildOptions(context=context, output=tmp_path / "layout", tag="v1"))
    ref = f"{registry.host}/cli/tiny:v1"

    pushed = run("push", f"{tmp_path / 'layout'}:v1", ref, env=env)
    assert pushed.returncode == 0, pushed.stderr
    assert "(pushed," in pushed.stdout
    again = run("push", f"{tmp_path / 'layout'}:v1", ref, env=env)
    assert "(unchanged, 0 bytes)" in again.stdout

    assert run("pull", ref, env=env).returncode == 0
    listed = json.loads(run("list", "--json", env=env).stdout)
    assert [(row["name"], row["tag"], row["arch"]) for row in listed] == [
        (f"{registry.host}/cli/tiny", "v1", "llama")
    ]
    table = run("list", env=env).stdout
    assert "NAME" in table and "BPW" in table and "cli/tiny" in table
    config = json.loads(run("inspect", ref, "--json", env=env).stdout)
    assert config["config"]["Cmd"] == ["-m", "/models/tiny.gguf"]
    # without --json: a summary a person reads (the seed's columns, context, layers, labels)
    summary = run("inspect", ref, env=env).stdout.splitlines()
    assert summary[0] == f"NAME     {registry.host}/cli/tiny:v1"
    fields = dict(line.split(None, 1) for line in summary if not line.startswith(("  ", "LAB")))
    assert fields["ARCH"] == "llama" and fields["CONTEXT"] == "2048" and fields["LAYERS"]
    assert "LABELS" in summary and any("gguf.model.architecture=llama" in s for s in summary)
    assert len(summary) < 60  # the full config was 2,200 lines

    # `run` serves a stored model in place, as the seed's `run REF` does.
    dry = run("run", ref, "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert str(tmp_path / "store") in dry.stdout and "tiny.gguf" in dry.stdout

    removed = run("remove", listed[0]["id"].split(":")[1][:12], env=env)
    assert removed.returncode == 0, removed.stderr
    assert json.loads(run("list", "--json", env=env).stdout) == []
    missing = run("inspect", ref, env=env)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
