"""Where the pinned llama.cpp lives: the runtime's build identity and its matching converter.

The runtime is the compiled ``llama_cpp`` package (llama-cpp-python). Its wheel carries no Python
converter, but its sdist vendors the whole llama.cpp tree it was built from, so the converter is
taken from that sdist: same commit as the runtime by construction. It is unpacked once per
llama-cpp-python version into a cache directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.metadata
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from harness._fs import CACHE_ENV, cache_root
from harness.errors import ToolchainError

__all__ = [
    "CACHE_ENV",
    "SDIST_ENV",
    "LlamaBuild",
    "Progress",
    "cache_dir",
    "converter_commit",
    "converter_dir",
    "llama_cpp_build",
    "llama_cpp_python_version",
    "sdist_archive",
]

#: A local llama-cpp-python sdist (.tar.gz) to unpack instead of asking pip for one (offline use).
SDIST_ENV = "GGUF_HARNESS_LLAMA_CPP_SDIST"

#: Called with one line of a tool's log at a time.
Progress = Callable[[str], None]

_log = logging.getLogger("harness.toolchain")

_DIST = "llama_cpp_python"
_VENDOR = PurePosixPath("vendor/llama.cpp")
# The converter's top-level scripts and packages; ``conversion/`` only exists in newer commits
# (older ones keep every model class inside convert_hf_to_gguf.py).
_WANTED_FILES = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "LICENSE")
_WANTED_DIRS = ("conversion", "gguf-py", "requirements")
_REQUIRED = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "gguf-py/gguf/__init__.py")
# Written last inside the unpacked tree: the llama.cpp commit the sdist vendors.
_COMMIT_FILE = "COMMIT"


@dataclass(frozen=True)
class LlamaBuild:
    """The llama.cpp that this harness runs, as far as the installed binaries can tell."""

    llama_cpp_python: str  # "0.3.36"
    commit: str  # short llama.cpp commit the library was built from, "0c1e570"
    dirty: bool  # built from a tree with local changes (llama-cpp-python's own sdist build is)
    ggml_version: str  # "0.25.3"

    @property
    def label(self) -> str:
        """A stable one-line identity for an image label.

        llama.cpp's "b1234" build number is not part of it: the sdist vendors a shallow clone,
        so the number CMake derives from ``git rev-list --count`` is meaningless there.
        """
        return f"llama-cpp-python {self.llama_cpp_python} (llama.cpp {self.commit})"


def llama_cpp_python_version() -> str:
    try:
        return importlib.metadata.version(_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise ToolchainError(
            "llama-cpp-python is not installed: install the harness with its 'llama' extra"
        ) from None


def llama_cpp_build() -> LlamaBuild:
    """Identity of the installed llama.cpp, read from the loaded library itself."""
    version = llama_cpp_python_version()
    commit, ggml_version = _library_identity()
    short, _, suffix = commit.partition("-")
    return LlamaBuild(
        llama_cpp_python=version,
        commit=short,
        dirty=suffix == "dirty",
        ggml_version=ggml_version,
    )


@functools.cache
def _library_identity() -> tuple[str, str]:
    # cached: the loaded library cannot change under a running process
    lib = _runtime_library()
    return _c_string(lib, "ggml_commit"), _c_string(lib, "ggml_version")


def _runtime_library() -> ctypes.CDLL:
    try:
        import llama_cpp.llama_cpp as binding
    except (ImportError, OSError) as error:
        raise ToolchainError(f"cannot load llama.cpp through llama_cpp: {error}") from error
    # ggml_commit/ggml_version live in libggml-base, a dependency of libllama: a symbol lookup
    # on libllama's handle finds them without loading a second copy of the library.
    lib = getattr(binding, "_lib", None)
    if not isinstance(lib, ctypes.CDLL):
        raise ToolchainError("llama_cpp does not expose its shared library (_lib)")
    return lib


def _c_string(lib: ctypes.CDLL, name: str) -> str:
    try:
        function = getattr(lib, name)
    except AttributeError:
        raise ToolchainError(f"the llama.cpp library has no {name}()") from None
    function.argtypes = []
    function.restype = ctypes.c_char_p
    value = function()
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else ""


def cache_dir() -> Path:
    """The harness's cache root (``harness._fs.cache_root``)."""
    return cache_root()


def converter_commit(directory: Path) -> str | None:
    """The full llama.cpp commit an unpacked converter came from, when its sdist recorded one."""
    marker = directory / _COMMIT_FILE
    if not marker.is_file():
        return None
    text = marker.read_text(encoding="utf-8").strip()
    return text or None


def converter_dir(*, sdist: Path | None = None, progress: Progress | None = None) -> Path:
    """The directory holding llama.cpp's converter for the installed llama-cpp-python.

    Unpacked on first use from ``sdist``, else from ``sdist_archive()``. The converter must come
    from the commit the runtime was built from: a mismatch is an error, not a warning.
    """
    version = llama_cpp_python_version()
    target = cache_dir() / "llama.cpp" / f"llama-cpp-python-{version}"
    if not _complete(target):
        if sdist is not None and not sdist.is_file():
            raise ToolchainError.at(sdist, "llama-cpp-python sdist not found")
        _populate(target, sdist or sdist_archive(progress))
    _check_commit(target)
    return target


def sdist_archive(progress: Progress | None = None) -> Path:
    """The llama-cpp-python sdist of the installed version: ``$GGUF_HARNESS_LLAMA_CPP_SDIST``,
    else a copy downloaded once into the cache (the converter and the programs both come from it).
    """
    configured = os.environ.get(SDIST_ENV)
    if configured:
        path = Path(configured)
        if not path.is_file():
            raise ToolchainError.at(path, "llama-cpp-python sdist not found")
        return path
    version = llama_cpp_python_version()
    folder = cache_dir() / "llama.cpp" / "sdist"
    cached = folder / f"llama_cpp_python-{version}.tar.gz"
    if cached.is_file():
        return cached
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix=".download.", dir=folder) as work:
            downloaded = _download_sdist(version, Path(work), progress)
            os.replace(downloaded, cached)
    except BaseException:
        with contextlib.suppress(OSError):
            folder.rmdir()  # leave no trace of a failed download
        raise
    return cached


def _complete(directory: Path) -> bool:
    return all((directory / name).is_file() for name in _REQUIRED)


def _check_commit(directory: Path, *, origin: Path | None = None) -> None:
    commit = converter_commit(directory)
    if commit is None:
        return
    runtime = llama_cpp_build()
    if commit.startswith(runtime.commit):
        return
    mismatch = (
        f"converter is from llama.cpp {commit[:7]} but the runtime was built from {runtime.commit}"
    )
    if origin is not None:
        raise ToolchainError.at(origin, mismatch)
    raise ToolchainError.at(
        directory, f"{mismatch}; delete this directory to fetch the matching one"
    )


def _populate(target: Path, sdist: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Unpack beside the target and rename: a reader never sees a half-unpacked converter, and two
    # processes racing to populate it both end up with one complete copy.
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as work:
        staging = Path(work) / "converter"
        _unpack(sdist, staging)
        _check_commit(staging, origin=sdist)  # a mismatched converter never gets cached
        try:
            staging.rename(target)
        except OSError as error:
            # another process may have finished first: its copy is as good as ours
            if not _complete(target):
                raise ToolchainError.at(
                    target, f"cannot install the converter here ({error.strerror}): delete it"
                ) from error
    _log.info("llama.cpp converter unpacked into %s", target)


def _download_sdist(version: str, into: Path, progress: Progress | None) -> Path:
    requirement = f"llama-cpp-python=={version}"
    if progress is not None:
        progress(f"downloading the {requirement} sdist for llama.cpp's converter")
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",
        # Only this package as source: ":all:" would also build pip's build dependencies
        # (scikit-build-core) from source just to prepare metadata, 25 s instead of 4 s.
        "--no-binary",
        "llama-cpp-python",
        "--dest",
        str(into),
        requirement,
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as error:
        raise ToolchainError(f"cannot run pip to fetch {requirement}: {error}") from error
    archives = sorted(into.glob("*.tar.gz")) if into.is_dir() else []
    if done.returncode != 0 or not archives:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-20:])
        last = tail.splitlines()[-1] if tail else f"exit status {done.returncode}"
        raise ToolchainError(
            f"cannot download the {requirement} sdist (set {SDIST_ENV} to a local copy): {last}",
            detail=tail,
        )
    return archives[0]


def _unpack(sdist: Path, staging: Path) -> None:
    try:
        with tarfile.open(sdist, "r:*") as archive:
            commit = _extract_converter(archive, staging)
    except (tarfile.TarError, OSError, EOFError) as error:
        raise ToolchainError.at(sdist, f"cannot unpack the sdist: {error}") from error
    missing = [name for name in _REQUIRED if not (staging / name).is_file()]
    if missing:
        raise ToolchainError.at(
            sdist, f"not a llama-cpp-python sdist with a vendored llama.cpp: no {missing[0]}"
        )
    if commit:
        (staging / _COMMIT_FILE).write_text(commit + "\n", encoding="utf-8")


def _extract_converter(archive: tarfile.TarFile, staging: Path) -> str | None:
    commit: str | None = None
    wanted: list[tarfile.TarInfo] = []
    for member in archive.getmembers():
        parts = PurePosixPath(member.name).parts
        if len(parts) < 2 or ".." in parts:
            continue
        inner = PurePosixPath(*parts[1:])  # drop "llama_cpp_python-<version>/"
        if inner == PurePosixPath(".git/modules", _VENDOR, "HEAD") and member.isfile():
            commit = _read_member(archive, member)
            continue
        if not _is_wanted(inner):
            continue
        if not (member.isfile() or member.isdir()):
            continue  # links and devices have no place in a converter
        member.name = str(inner.relative_to(_VENDOR))
        wanted.append(member)
    staging.mkdir(parents=True)
    for member in wanted:
        if hasattr(tarfile, "data_filter"):
            archive.extract(member, staging, set_attrs=False, filter="data")
        else:  # Python < 3.10.12: names were already checked for ".." and links skipped
            archive.extract(member, staging, set_attrs=False)
    return commit if commit and _is_sha(commit) else None


def _is_wanted(inner: PurePosixPath) -> bool:
    try:
        relative = inner.relative_to(_VENDOR)
    except ValueError:
        return False
    if not relative.parts:
        return False
    if len(relative.parts) == 1:
        return relative.name in _WANTED_FILES
    return relative.parts[0] in _WANTED_DIRS


def _read_member(archive: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    stream = archive.extractfile(member)
    if stream is None:
        return ""
    with stream:
        return stream.read(200).decode("ascii", "replace").strip()


def _is_sha(text: str) -> bool:
    return len(text) == 40 and all(c in "0123456789abcdef" for c in text)
