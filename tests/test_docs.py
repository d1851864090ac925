"""Examples in the docs stay true: every model.yaml example validates against the schema and its
semantic checks, and every Packerfile example lints clean."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.expect import validate
from harness.packerfile import lint

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def _blocks(language: str) -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for number, match in enumerate(_BLOCK.finditer(doc.read_text(encoding="utf-8"))):
            if match.group(1) == language:
                found.append((f"{doc.name}#{number}", match.group(2)))
    return found


_MODEL_YAMLS = [(name, text) for name, text in _blocks("yaml") if "schemaVersion:" in text]
_PACKERFILES = _blocks("dockerfile")


def test_the_docs_have_examples_of_both() -> None:
    assert len(_MODEL_YAMLS) >= 7 and len(_PACKERFILES) >= 1


@pytest.mark.parametrize(("name", "text"), _MODEL_YAMLS, ids=[n for n, _ in _MODEL_YAMLS])
def test_model_yaml_examples_are_valid(name: str, text: str, tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text(text)
    assert [str(p) for p in validate(path)] == []


@pytest.mark.parametrize(("name", "text"), _PACKERFILES, ids=[n for n, _ in _PACKERFILES])
def test_packerfile_examples_lint_clean(name: str, text: str, tmp_path: Path) -> None:
    path = tmp_path / "GGUFPackerfile"
    path.write_text(text)
    assert [str(p) for p in lint([path])] == []
