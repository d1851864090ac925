"""Start-up stays fast by what it imports, not by a timed test: `--help` and `inspect FILE` load
none of the heavy packages (numpy through gguf-py, jsonschema, urllib3, docker, pytest, yaml).
benchmarks/startup.py measures the seconds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_plugin import write_gguf

# What the chain imports and a header read needs none of; "gguf" is gguf-py's package (its
# __init__ imports numpy), not harness.gguf, which loads only gguf-py's constants module.
HEAVY = ("numpy", "gguf", "jsonschema", "urllib3", "docker", "pytest", "yaml", "zstandard", "oras")

_PROBE = """
import contextlib, io, json, sys
from harness.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        code = main(sys.argv[1:])
    except SystemExit as stop:
        code = stop.code
print(json.dumps({"code": code, "modules": sorted(sys.modules), "out": out.getvalue()}))
"""


def _modules_after(*argv: str) -> tuple[set[str], str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["code"] in (0, None), result["out"]
    return set(result["modules"]), result["out"]


def _heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in HEAVY}


def test_help_loads_none_of_the_chain() -> None:
    modules, out = _modules_after("--help")
    assert "inspect" in out
    assert _heavy(modules) == set()
    assert "rich" not in modules
    assert {m for m in modules if m.startswith("harness.")} <= {"harness.cli", "harness.errors"}


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_inspect_of_a_file_reads_a_header_with_no_heavy_import(
    tmp_path: Path, as_json: bool
) -> None:
    path = write_gguf(tmp_path / "tiny.gguf")
    modules, out = _modules_after("inspect", *(["--json"] if as_json else []), str(path))
    assert "llama" in out
    assert _heavy(modules) == {"gguf.constants"}  # gguf-py's tables alone, never its package
    assert "rich" not in modules  # a third of the start-up: inspect prints plain columns
    chain = {m.split(".")[1] for m in modules if m.startswith("harness.")}
    assert chain == {"cli", "errors", "units", "gguf"}  # the header reader, nothing else


def test_inspect_prints_a_name_as_it_is(tmp_path: Path) -> None:
    """Plain columns: a model named like rich markup or an :emoji: code is shown as written."""
    path = write_gguf(tmp_path / "tiny.gguf", name="[bold]x[/bold] :smile:")
    _, out = _modules_after("inspect", str(path))
    assert "[bold]x[/bold] :smile:" in out


def test_gguf_py_imported_later_shares_the_constants() -> None:
    """harness.gguf loads gguf-py's constants first; gguf-py's own import must reuse them, so an
    enum made by either side is the other's (the header reader compares types with ``is``)."""
    probe = (
        "import harness.gguf as h, gguf, gguf.constants as c;"
        "assert h.GGUFValueType is gguf.GGUFValueType is c.GGUFValueType;"
        "assert h.Keys is gguf.Keys"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_collecting_models_loads_none_of_the_chain(tmp_path: Path) -> None:
    """pytest loads the plugin in every session; collecting (matrix cells, --collect-only, -k)
    reads model.yaml files and nothing else: the chain comes when an item first runs."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.yaml").write_text(
            f"schemaVersion: 1\nname: {name}\nsource: {{gguf: m.gguf}}\n"
            "expect: {architecture: llama}\nmemory: {budgets: [{name: gpu, vram: 1GiB}]}\n"
        )
    probe = (
        "import sys, pytest;"
        f"code = pytest.main([{str(tmp_path)!r}, '--collect-only', '-q', '-pno:cacheprovider']);"
        "print(code, sorted(m for m in sys.modules if m.startswith('harness.pipeline')"
        " or m.split('.')[0] in ('numpy', 'urllib3', 'docker') or m == 'gguf'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 tests collected" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "0 []"
