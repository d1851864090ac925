"""The house as docs/architecture.md draws it: imports go one way, the core never imports pytest,
each error class lives in harness.errors, and no module is too long to read in one sitting."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parent.parent / "harness"

# Each part may import the parts on later lines, never those on earlier ones (same line: peers
# that do not import each other).
FLOORS: tuple[tuple[str, ...], ...] = (
    ("cli", "pytest_plugin", "action", "__main__"),
    ("pipeline",),
    ("publish", "smoke"),
    ("builder", "store"),
    ("distribution",),
    ("expect",),
    ("estimate", "quality"),
    ("oci", "packerfile"),
    ("toolchain",),
    ("gguf",),
    ("report",),
    ("_progress",),
    ("units", "_fs"),
    ("__init__",),
    ("errors",),
)
FACES = {"cli", "pytest_plugin", "action", "__main__"}
GENERATED = {"_server_options.py"}  # written from `llama-server --help`
MAX_LINES = 400


def _part(path: Path) -> str:
    rel = path.relative_to(HARNESS)
    return rel.parts[0].removesuffix(".py")


def _modules() -> list[Path]:
    return sorted(p for p in HARNESS.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _floor(part: str) -> int:
    return next(i for i, parts in enumerate(FLOORS) if part in parts)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(HARNESS)))
def test_imports_go_down_only(path: Path) -> None:
    part = _part(path)
    for module in _imports(path):
        if not module.startswith("harness."):
            continue
        other = module.split(".")[1]
        if other == part:
            continue
        if part in FACES and other in FACES:
            continue  # `python -m harness.action` calls the CLI: a face may call a face
        assert _floor(other) > _floor(part), f"{part} imports {module}: not a lower floor"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(HARNESS)))
def test_the_core_never_imports_pytest(path: Path) -> None:
    if _part(path) == "pytest_plugin":
        return
    assert not {m for m in _imports(path) if m == "pytest" or m.startswith("pytest.")}


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(HARNESS)))
def test_modules_are_short(path: Path) -> None:
    if path.name in GENERATED:
        return
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(HARNESS)}: {lines} lines"


def test_every_error_class_lives_in_harness_errors() -> None:
    elsewhere = []
    for path in _modules():
        if path == HARNESS / "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(base, ast.Name) and base.id.endswith("Error") for base in node.bases
            ):
                elsewhere.append(f"{path.relative_to(HARNESS)}: {node.name}")
    assert elsewhere == []
