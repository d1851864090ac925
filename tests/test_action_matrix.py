"""``matrix`` (models and variants as ``strategy.matrix`` JSON) and ``select`` (``--only``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.action import find_model_files, matrix, parse_only, select
from harness.errors import UsageError
from harness.expect import load_spec

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = """\
schemaVersion: 1
name: tiny
build:
  args: {QUANTIZE_TYPE: Q8_0}
  variants:
    - name: q8_0
    - name: q4_k_m
      args: {QUANTIZE_TYPE: Q4_K_M}
expect:
  architecture: llama
"""
PLAIN = "schemaVersion: 1\nname: {name}\nexpect:\n  architecture: llama\n"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    (tmp_path / "models" / "tiny" / "model.yaml").write_text(VARIANTS)
    (tmp_path / "models" / "plain").mkdir()
    (tmp_path / "models" / "plain" / "chat.model.yaml").write_text(PLAIN.format(name="plain"))
    (tmp_path / "models" / ".hidden").mkdir()
    (tmp_path / "models" / ".hidden" / "model.yaml").write_text(PLAIN.format(name="hidden"))
    return tmp_path


def test_matrix_of_this_repository() -> None:
    cells = matrix([ROOT / "models"])["include"]
    assert [(Path(c["model"]).name, c["name"], c["variant"], c["only"]) for c in cells] == [
        ("minilm", "all-minilm-l6-v2", "q8_0", "all-minilm-l6-v2:q8_0"),
        ("minilm", "all-minilm-l6-v2", "q4_0", "all-minilm-l6-v2:q4_0"),
        ("smollm2", "smollm2-135m-instruct", "", "smollm2-135m-instruct"),
        ("smollm2-ladder", "smollm2-ladder", "q8_0", "smollm2-ladder:q8_0"),
        ("smollm2-ladder", "smollm2-ladder", "q4_k_m", "smollm2-ladder:q4_k_m"),
        ("smollm2-ladder", "smollm2-ladder", "q2_k", "smollm2-ladder:q2_k"),
    ]


def test_matrix_with_variants_and_globs(repo: Path) -> None:
    cells = matrix([repo / "models"])["include"]
    assert [(c["name"], c["variant"], c["only"]) for c in cells] == [
        ("plain", "", "plain"),
        ("tiny", "q8_0", "tiny:q8_0"),
        ("tiny", "q4_k_m", "tiny:q4_k_m"),
    ]
    assert cells[1]["model"] == (repo / "models" / "tiny").as_posix()
    globbed = find_model_files([f"{repo}/models/*/model.yaml", repo / "models" / "tiny"])
    assert globbed == [repo / "models" / "tiny" / "model.yaml"]


def test_matrix_refuses_what_it_cannot_split(repo: Path) -> None:
    (repo / "models" / "again").mkdir()
    (repo / "models" / "again" / "model.yaml").write_text(PLAIN.format(name="plain"))
    with pytest.raises(UsageError, match="two models are named 'plain'"):
        matrix([repo / "models"])
    with pytest.raises(UsageError, match="no such file or directory"):
        matrix([repo / "nowhere/*.yaml"])


def test_select(repo: Path) -> None:
    specs = [load_spec(p) for p in find_model_files([repo / "models"])]
    assert [(s.spec.name, s.variant and s.variant.name) for s in select(specs, "tiny")] == [
        ("tiny", "q8_0"),
        ("tiny", "q4_k_m"),
    ]
    (one,) = select(specs, "tiny:q4_k_m")
    assert one.variant is not None and dict(one.variant.args) == {"QUANTIZE_TYPE": "Q4_K_M"}
    assert one.spec.build.args_for(one.variant) == {"QUANTIZE_TYPE": "Q4_K_M"}
    (plain,) = select(specs, "plain")  # by name; a model without variants is one cell
    assert plain.variant is None
    assert select(specs, "tiny:q8_0")[0].spec.name == "tiny"
    with pytest.raises(UsageError, match=r"no model named 'nope' \(models: plain, tiny\)"):
        select(specs, "nope")
    with pytest.raises(UsageError, match=r"tiny has no variant 'q2' \(variants: q8_0, q4_k_m\)"):
        select(specs, "tiny:q2")
    with pytest.raises(UsageError, match="NAME or NAME:VARIANT"):
        parse_only("tiny:")


def test_matrix_command(repo: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "harness.action", "matrix", str(repo / "models")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert [c["only"] for c in json.loads(done.stdout)["include"]] == [
        "plain",
        "tiny:q8_0",
        "tiny:q4_k_m",
    ]
