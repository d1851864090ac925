"""The report as people see it on GitHub: summary, chart, annotations, outputs.

Synthetic reports here cover the shapes a real run of this version cannot yet produce (memory
budgets, smoke answers, digests, models that could not be built) and the size limits;
tests/test_action_run.py covers a real run end to end.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.action import (
    SUMMARY_LIMIT,
    check_run_annotations,
    format_outputs,
    load_report,
    memory_bars,
    parse_report,
    summary_markdown,
    text_bar,
    workflow_commands,
)
from harness.action import annotations as find_annotations  # `annotations`: a __future__ name
from harness.errors import UsageError
from tests.action_runner import parse_outputs

GIB = 1 << 30
DIGEST = "sha256:" + "ab" * 32


def _item(
    name: str, outcome: str = "passed", section: str = "expect", line: int = 5, **more: Any
) -> dict[str, Any]:
    return {
        "id": f"models/m/model.yaml::{section}::{name}",
        "section": section,
        "name": name,
        "location": f"models/m/model.yaml:{line}",
        "outcome": outcome,
        "duration": 0.01,
        "expected": more.pop("expected", None),
        "actual": more.pop("actual", None),
        "message": more.pop("message", ""),
    }


def _report(*models: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": 1,
        "harness": "0.1.0",
        "passed": all(m["passed"] for m in models),
        "models": list(models),
    }


def _model(name: str, items: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
    passed = all(i["outcome"] == "passed" for i in items)
    return {
        "path": f"models/{name}/model.yaml",
        "name": name,
        "items": items,
        "passed": passed,
        **more,
    }


RICH = _report(
    _model(
        "smollm2",
        [
            _item("architecture", expected={"equals": "llama"}, actual="llama", line=14),
            _item(
                "parameters", expected={"written": "134.52M", "min": 1, "max": 2}, actual=134515008
            ),
            # What the harness's budget items record: limits as expected, estimates as actual.
            _item(
                "two-gpus",
                section="memory",
                line=28,
                expected={"GPU0": 2 * GIB, "GPU1": 2 * GIB, "full offload": 0},
                actual={"GPU0": GIB, "GPU1": GIB, "full offload": 0, "max_context": 8192},
            ),
            _item(
                "rtx4090",
                section="memory",
                line=30,
                actual={"devices": [{"name": "GPU0", "estimate": 5 * GIB, "budget": 24 * GIB}]},
            ),
            _item(
                "two-t4",
                "failed",
                section="memory",
                line=33,
                actual={
                    "GPU0": {"estimate": 17 * GIB, "budget": 16 * GIB},
                    "host": {"estimate": GIB, "budget": 8 * GIB},
                },
                message="GPU0 needs 17.00 GiB, over its 16.00 GiB budget",
            ),
            _item("laptop", section="memory", line=36, actual=3 * GIB, expected={"max": 8 * GIB}),
            _item(
                "capital",
                section="smoke",
                line=40,
                actual={"text": "Paris is the capital | of France."},
            ),
            _item("embedding", section="smoke", line=44, actual="[0.1, 0.2]"),
        ],
        publish={
            "published": True,
            "reason": None,
            "items": [
                {
                    "reference": "ghcr.io/o/smollm2:latest",
                    "format": "gguf-packer",
                    "digest": "sha256:" + "cd" * 32,
                    "bytes_sent": 1,
                    "changed": True,
                },
            ],
        },
    ),
)


def test_memory_bars_read_every_documented_shape() -> None:
    run = parse_report(RICH)
    bars = [bar for item in run.models[0].section("memory") for bar in memory_bars(item)]
    assert [(b.label, b.estimate // GIB, (b.budget or 0) // GIB, b.passed) for b in bars] == [
        ("two-gpus GPU0", 1, 2, True),
        ("two-gpus GPU1", 1, 2, True),
        ("rtx4090 GPU0", 5, 24, True),
        ("two-t4 GPU0", 17, 16, False),
        ("two-t4 host", 1, 8, False),
        ("laptop", 3, 8, True),
    ]
    assert text_bar(0.5, 10) == "█████░░░░░"
    assert text_bar(1.2, 10) == "██████████▓▓"


def test_summary_shows_checks_chart_smoke_and_digests() -> None:
    text = summary_markdown(RICH)
    assert text.startswith("## gguf-harness: ❌ 1 of 1 model failed\n")
    assert "```mermaid\nxychart-beta\n" in text
    labels = '"two-gpus GPU0", "two-gpus GPU1", "rtx4090 GPU0", "two-t4 GPU0", "two-t4 host"'
    assert f'x-axis [{labels}, "laptop"]' in text
    # The budget first, then the estimate drawn over it.
    assert "    bar [2, 2, 24, 16, 8, 8]\n    bar [1, 1, 5, 17, 1, 3]\n```" in text
    assert "| two-t4 ❌ | GPU0 | 17.00 GiB | 16.00 GiB | `████████████████████▓` 106% |" in text
    assert "| ✅ | capital | Paris is the capital \\| of France. |" in text
    assert f"| ghcr.io/o/smollm2:latest | `sha256:{'cd' * 32}` |" in text
    assert (
        "| ✅ | memory.two-gpus | `GPU0 ≤ 2.00 GiB; GPU1 ≤ 2.00 GiB` | `GPU0 1.00 GiB; GPU1" in text
    )
    assert "| ✅ | expect.parameters | `134.52M` | `134515008` | models/m/model.yaml:5 |" in text
    # The failure is in the open; passed checks are folded away.
    assert text.index("memory.two-t4") < text.index("<details>")


def test_summary_stays_under_the_limit() -> None:
    items = [
        _item(f"metadata::key{i}", "failed", actual="x" * 100, message="m" * 200)
        for i in range(300)
    ]
    big = _report(*[_model(f"model{i}", items) for i in range(40)])
    full = summary_markdown(big)
    assert len(full.encode()) <= SUMMARY_LIMIT
    assert full.count("### ❌") == 40  # each failing model at least named, with its counts
    small = summary_markdown(big, limit=20_000)
    assert len(small.encode()) <= 20_000
    assert "…and 280 more failures" in small  # compact: the first 20 failures of a model
    assert small.count("### ❌") >= 1


def test_annotations_collapse_one_cause_and_escape() -> None:
    stopped = [
        _item(n, "error", line=i + 3, message="build failed: no such file x.gguf")
        for i, n in enumerate("abc")
    ]
    odd = _item("metadata::a,b", "failed", line=9, message="100% wrong\nsecond line")
    run = _report(_model("broken", stopped), _model("odd", [odd]))
    found = find_annotations(run, root="/repo/sub/..", cwd="/repo")
    assert [(a.path, a.line, a.title) for a in found] == [
        ("models/m/model.yaml", 9, "odd: expect.metadata.a,b"),
        ("models/m/model.yaml", 3, "broken: expect.a (+2 more checks)"),
    ]
    assert found[0].command() == (
        "::error file=models/m/model.yaml,line=9,title=odd%3A expect.metadata.a%2Cb"
        "::100%25 wrong%0Asecond line"
    )
    assert found[1].message == "could not be checked: build failed: no such file x.gguf"
    # From a working directory below the repository, paths gain the prefix.
    assert find_annotations(run, root="/repo", cwd="/repo/sub")[0].path == "sub/models/m/model.yaml"


def test_annotation_limits() -> None:
    items = [_item(f"k{i}", "failed", line=i + 1, message=f"m{i}") for i in range(123)]
    found = find_annotations(_report(_model("m", items)))
    lines = workflow_commands(found)
    assert len(lines) == 11 and lines[-1].startswith(
        "::notice title=gguf-harness::113 more failures"
    )
    batches = check_run_annotations(found)
    assert [len(b) for b in batches] == [50, 50, 23]
    assert batches[0][0] == {
        "path": "models/m/model.yaml",
        "start_line": 1,
        "end_line": 1,
        "annotation_level": "failure",
        "title": "m: expect.k0",
        "message": "m0",
    }


def test_outputs_survive_any_value() -> None:
    hostile = 'line one\nother=injected\nghadelimiter_x\n{"a": 1}'
    text = format_outputs(
        {"passed": "false", "digests": json.dumps({"m": {"r": DIGEST}}), "x": hostile}
    )
    assert parse_outputs(text) == {
        "passed": "false",
        "digests": json.dumps({"m": {"r": DIGEST}}),
        "x": hostile,
    }
    with pytest.raises(ValueError):
        format_outputs({"bad\nname": "v"})


def test_report_is_read_leniently(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no report at"):
        load_report(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(UsageError, match="not a gguf-harness report"):
        load_report(tmp_path / "bad.json")
    run = parse_report(
        {"models": [{"name": "m", "items": [{"outcome": "passed", "location": "x"}]}]}
    )
    assert run.passed and run.models[0].items[0].path == "x" and run.models[0].items[0].line is None
    assert parse_report({"models": []}).passed is False
    assert "no model was checked" in summary_markdown({"models": []})


def test_a_summary_of_300_models_puts_the_worst_first_and_stays_under_1_mib() -> None:
    """A repository's run: 300 models, most passing, some failing many checks, a few that could
    not be built. The worst come first (not built, then most failures), passes are folded away
    after them, and what does not fit is counted in one line, all under GitHub's 1 MiB."""
    failing = [
        _item(f"metadata::key{i}", "failed", actual="x" * 100, message="m" * 200)
        for i in range(300)
    ]
    broken = [_item(n, "error", message="build failed: no such file x.gguf") for n in ("a", "b")]
    passing = [_item(f"check{i}", actual="y" * 50) for i in range(30)]
    models = []
    for i in range(300):
        if i % 10 == 3:
            models.append(_model(f"fails-{i:03d}", failing[: 10 + i]))
        elif i % 50 == 7:
            models.append(_model(f"broken-{i:03d}", broken))
        else:
            models.append(_model(f"passes-{i:03d}", passing))
    text = summary_markdown(_report(*models))
    assert len(text.encode()) <= SUMMARY_LIMIT < 1 << 20
    sections = [line.split(" ", 2)[2] for line in text.splitlines() if line.startswith("### ")]
    kinds = [name.split("-")[0] for name in sections]
    assert kinds[:6] == ["broken"] * 6  # could not be built: first
    fails = [name for name in sections if name.startswith("fails")]
    assert fails[:3] == ["fails-293", "fails-283", "fails-273"]  # the most failures next
    assert kinds.index("passes") > max(i for i, k in enumerate(kinds) if k != "passes")
    assert text.index("### ✅") > text.index("<details><summary>✅ 264 passed</summary>")
    left = len(models) - len(sections)
    assert left > 0 and f"> {left} model(s) left out to stay under GitHub's size limit" in text
    # The table at the top lists the failures first and says how many rows it left out.
    table = text[: text.index("\n### ")]
    assert len(table.encode()) <= SUMMARY_LIMIT // 4
    assert table.index("broken-007") < table.index("fails-293") < table.index("passes-000")
