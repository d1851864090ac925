"""What `gguf-harness toolchain` prints: the one llama.cpp this harness runs, and where it lives."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ToolchainError

from ._llama import converter_dir, llama_cpp_build, llama_cpp_python_version
from ._programs import PROGRAMS, Programs, build_options, find_programs

__all__ = ["ProgramInfo", "ToolchainReport", "toolchain_report"]


@dataclass(frozen=True)
class ProgramInfo:
    name: str
    path: Path
    version: str  # the first line the program prints for --version


@dataclass(frozen=True)
class ToolchainReport:
    llama_cpp_python: str
    commit: str
    build_number: int
    backend: str
    cmake_options: tuple[str, ...]
    build_dir: Path
    build_seconds: float
    library: str  # the commit the in-process library (llama-cpp-python) reports
    programs: tuple[ProgramInfo, ...]
    converter: Path | None

    def to_json(self) -> dict[str, Any]:
        return {
            "llama_cpp_python": self.llama_cpp_python,
            "commit": self.commit,
            "build_number": self.build_number,
            "backend": self.backend,
            "cmake_options": list(self.cmake_options),
            "build_dir": str(self.build_dir),
            "build_seconds": self.build_seconds,
            "library": self.library,
            "programs": {
                p.name: {"path": str(p.path), "version": p.version} for p in self.programs
            },
            "converter": str(self.converter) if self.converter else None,
        }


def _version(path: Path, found: Programs) -> str:
    if path.name == "llama-quantize":
        # it has no --version; it prints the same "build = N (commit)" banner when it runs
        return f"{found.build_number} ({found.commit[:7]}), from the build record"
    try:
        done = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"does not run: {error}"
    for line in (done.stdout + done.stderr).splitlines():
        if line.startswith("version:"):
            return line.partition(":")[2].strip()  # "0.5.0-dev (build 11312, commit 0c1e570)"
    return f"exit status {done.returncode}"


def toolchain_report(programs: Programs | None = None) -> ToolchainReport:
    found = programs or find_programs()
    if found is None:
        options = build_options()
        raise ToolchainError(
            f"llama.cpp is not built for this machine ({options.backend}, key {options.key}):"
            " run scripts/setup.sh or `gguf-harness toolchain --build`"
        )
    build = llama_cpp_build()
    try:
        converter: Path | None = converter_dir()
    except ToolchainError:
        converter = None
    infos = tuple(ProgramInfo(n, found.path(n), _version(found.path(n), found)) for n in PROGRAMS)
    return ToolchainReport(
        llama_cpp_python=llama_cpp_python_version(),
        commit=found.commit,
        build_number=found.build_number,
        backend=found.options.backend,
        cmake_options=found.options.defines,
        build_dir=found.root,
        build_seconds=found.seconds,
        library=build.commit + ("-dirty" if build.dirty else ""),
        programs=infos,
        converter=converter,
    )
