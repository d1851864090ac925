"""llama.cpp's own programs, built once from the commit the whole chain pins.

The llama-cpp-python sdist vendors the llama.cpp tree its library is built from; the same tree is
compiled here with CMake into ``llama-server``, ``llama-quantize``, ``llama-perplexity``,
``llama-imatrix``, ``llama-gguf-split`` and the shared libraries (``libllama``, ``libggml*``,
``libmtmd``) that llama-cpp-python then loads (``link_python_library``): one compile, one llama.cpp
identity for the converter, the in-process library and every program.

A build lives under ``<cache>/llama.cpp/build/<commit>-<backend>-<key>/``, ``key`` hashing the
CMake options and compiler, so it is reused by every later set-up and CI run on the machine and
rebuilt when either changes. It is compiled in a sibling temporary directory and renamed into place
only when complete.

CPU features are chosen explicitly (``GGML_NATIVE=OFF``) from what the kernel says it enables in
``/proc/cpuinfo``, never from raw CPUID as ``-march=native`` does, and AMX stays off unless
``$GGUF_HARNESS_LLAMA_AMX=1``: on the virtual machines this project runs on, CPUID advertised AMX,
``-march=native`` compiled ggml's AMX kernels and the "AMX" repacked weight buffer, and every
quantized model then died with SIGILL or SIGSEGV at its first matrix multiplication (docs/
toolchain.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from harness.errors import ToolchainError

from ._build_options import (
    BACKEND_ENV,
    CMAKE_ARGS_ENV,
    BuildOptions,
    build_options,
    cpu_flags,
)
from ._llama import Progress, cache_dir, llama_cpp_python_version, sdist_archive

__all__ = [
    "BACKEND_ENV",
    "BUILD_NUMBER",
    "CMAKE_ARGS_ENV",
    "PROGRAMS",
    "BuildOptions",
    "Programs",
    "build_options",
    "build_programs",
    "cpu_flags",
    "find_programs",
    "link_python_library",
    "program",
]

PROGRAMS = (
    "llama-server",
    "llama-quantize",
    "llama-perplexity",
    "llama-imatrix",
    "llama-gguf-split",
)
#: llama.cpp's release number of the pinned commit (0c1e570 is tag b11312). The sdist vendors a
#: shallow tree, where CMake's ``git rev-list --count`` cannot derive it.
BUILD_NUMBER = 11312
_PINNED = {"0.3.36": ("0c1e57098bba43ac29e6e3b677cdceebdd22334f", BUILD_NUMBER)}

_RECORD = "BUILD.json"
_LIBRARY_TARGETS = ("llama", "ggml", "mtmd")


@dataclass(frozen=True)
class Programs:
    """One complete build: where each program and the shared libraries are, and what they are."""

    root: Path
    commit: str  # full llama.cpp commit
    build_number: int
    options: BuildOptions
    seconds: float  # how long the compile took when it ran

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    def path(self, name: str) -> Path:
        return self.bin_dir / name


def _pinned() -> tuple[str, int]:
    version = llama_cpp_python_version()
    try:
        return _PINNED[version]
    except KeyError:
        raise ToolchainError(
            f"llama-cpp-python {version} is not a version this harness pins (0.3.36)"
        ) from None


def _builds_dir() -> Path:
    return cache_dir() / "llama.cpp" / "build"


def _target(commit: str, options: BuildOptions) -> Path:
    return _builds_dir() / f"{commit[:7]}-{options.backend}-{options.key}"


def _load(root: Path) -> Programs | None:
    record = root / _RECORD
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
        options = BuildOptions(data["backend"], tuple(data["defines"]), data["compiler"])
        found = Programs(root, data["commit"], int(data["build_number"]), options, data["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not all(found.path(name).is_file() for name in PROGRAMS):
        return None
    return found


def find_programs(options: BuildOptions | None = None) -> Programs | None:
    """The build this environment runs: the one whose libraries llama-cpp-python loads (set up by
    ``link_python_library``, so found whatever ``$HOME`` or the cache root), else the cached
    build for this machine's options; None when neither exists."""
    if options is None:
        linked = _linked_build()
        if linked is not None:
            return linked
    commit, _ = _pinned()
    return _load(_target(commit, options or build_options()))


def _linked_build() -> Programs | None:
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        return None
    library = Path(spec.origin).parent / "lib" / "libllama.so"
    if not library.is_symlink():
        return None
    return _load(library.resolve().parent.parent)


def program(name: str) -> Path:
    """The path of one of PROGRAMS, from the cached build; a clear error when there is none."""
    if name not in PROGRAMS:
        raise ToolchainError(f"unknown llama.cpp program {name!r}")
    found = find_programs()
    if found is None:
        raise ToolchainError(
            f"llama.cpp's {name} is not built: run scripts/setup.sh or `gguf-harness toolchain"
            " --build`"
        )
    return found.path(name)


def build_programs(*, jobs: int | None = None, progress: Progress | None = None) -> Programs:
    """The build for this machine, compiled now unless the cache already holds it."""
    commit, number = _pinned()
    options = build_options()
    target = _target(commit, options)
    cached = _load(target)
    if cached is not None:
        return cached
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as work:
        work_dir = Path(work)
        source = work_dir / "src"
        _unpack_tree(sdist_archive(progress), source)
        build = work_dir / "build"
        staging = work_dir / "out"
        _compile(source, build, commit, number, options, jobs or os.cpu_count() or 1, progress)
        (staging / "bin").mkdir(parents=True)
        for item in sorted((build / "bin").iterdir()):
            if item.name in PROGRAMS or ".so" in item.name:
                shutil.copy2(item, staging / "bin" / item.name, follow_symlinks=False)
        record = {
            "commit": commit,
            "build_number": number,
            "backend": options.backend,
            "defines": list(options.defines),
            "compiler": options.compiler,
            "seconds": round(time.monotonic() - started, 1),
        }
        (staging / _RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        try:
            staging.rename(target)
        except OSError:
            if _load(target) is None:  # another process finished first: its build is as good
                raise
    built = _load(target)
    if built is None:
        raise ToolchainError.at(target, "the llama.cpp build is incomplete: delete it")
    return built


def _unpack_tree(sdist: Path, into: Path) -> None:
    vendor = PurePosixPath("vendor/llama.cpp")
    try:
        with tarfile.open(sdist, "r:gz") as archive:
            members = []
            for member in archive.getmembers():
                parts = PurePosixPath(member.name).parts
                if len(parts) < 4 or PurePosixPath(*parts[1:3]) != vendor:
                    continue
                member.name = str(PurePosixPath(*parts[3:]))
                members.append(member)
            archive.extractall(into, members=members, filter="data")
    except (tarfile.TarError, OSError) as error:
        raise ToolchainError.at(sdist, f"cannot unpack llama.cpp's source: {error}") from error


def _compile(
    source: Path,
    build: Path,
    commit: str,
    number: int,
    options: BuildOptions,
    jobs: int,
    progress: Progress | None,
) -> None:
    git = _stand_in_git(build.parent / "git", commit, number)
    configure = [
        "cmake",
        "-S",
        str(source),
        "-B",
        str(build),
        *options.defines,
        # Offline and lean: no web UI download, no TLS, no tests or examples.
        "-DLLAMA_USE_PREBUILT_UI=OFF",
        "-DLLAMA_OPENSSL=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_APP=OFF",
        "-DLLAMA_BUILD_TOOLS=ON",
        "-DLLAMA_BUILD_SERVER=ON",
        # The sdist's tree has no history: a stand-in git tells CMake the commit and the release
        # number, so the libraries and every program report the same identity.
        f"-DGIT_EXE={git}",
        f"-DGIT_EXECUTABLE={git}",
        # Programs and libraries sit side by side in bin/ and find each other there, wherever
        # the finished build is moved to.
        "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON",
        "-DCMAKE_INSTALL_RPATH=$ORIGIN",
    ]
    compile_ = ["cmake", "--build", str(build), "-j", str(jobs), "--target"]
    compile_ += [*PROGRAMS, *_LIBRARY_TARGETS]
    for command in (configure, compile_):
        _run(command, progress)


def _stand_in_git(path: Path, commit: str, number: int) -> Path:
    """A ``git`` for the three questions llama.cpp's CMake asks: the short commit, the commit
    count (llama.cpp's release number) and whether the tree is dirty (it is not)."""
    path.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        f"  *rev-parse*) echo {commit[:7]} ;;\n"
        f"  *rev-list*) echo {number} ;;\n"
        "  *) ;;\n"
        "esac\n",
        encoding="utf-8",
    )
    path.chmod(0o755)
    return path


def _run(command: list[str], progress: Progress | None) -> None:
    if shutil.which(command[0]) is None:
        raise ToolchainError(f"{command[0]} is not installed: it is needed to build llama.cpp")
    tail: list[str] = []
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            tail = [*tail[-40:], line.rstrip()]
            if progress is not None:
                progress(line.rstrip())
    if process.returncode != 0:
        detail = "\n".join(tail)
        last = next((line for line in reversed(tail) if "error" in line.lower()), tail[-1:])
        raise ToolchainError(f"building llama.cpp failed: {last}", detail=detail)


def link_python_library(programs: Programs) -> Path:
    """Point llama-cpp-python at this build's libraries and return its ``lib/`` directory.

    llama-cpp-python loads ``libllama`` and ``libmtmd`` from its package's ``lib/``; the set-up
    installs its wheel without compiling (``LLAMA_BUILD=OFF``) and fills ``lib/`` with links to
    this build, so the in-process library is exactly the one the programs use. Links to files,
    not a link to the directory: uninstalling the package then removes links, never the build.
    """
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        raise ToolchainError("llama-cpp-python is not installed")
    package = Path(spec.origin).parent
    lib = package / "lib"
    libraries = sorted(p for p in programs.bin_dir.iterdir() if ".so" in p.name)
    if lib.is_dir() and not lib.is_symlink():
        present = sorted(lib.iterdir())
        if [p.name for p in present] == [p.name for p in libraries] and all(
            p.is_symlink() and p.resolve() == q.resolve()
            for p, q in zip(present, libraries, strict=True)
        ):
            return lib
    staging = package / ".lib.new"
    old = package / ".lib.old"
    for leftover in (staging, old):
        if leftover.is_symlink() or leftover.is_file():
            leftover.unlink()
        elif leftover.exists():
            shutil.rmtree(leftover)
    staging.mkdir()
    for library in libraries:
        (staging / library.name).symlink_to(library)
    if lib.is_symlink() or lib.exists():
        os.replace(lib, old)  # a wheel that compiled its own copy: set aside, then deleted
    os.replace(staging, lib)
    if old.is_symlink() or old.is_file():
        old.unlink()
    elif old.exists():
        shutil.rmtree(old)
    return lib
