"""Locating the pinned llama.cpp: build identity, and the converter unpacked from its sdist."""

from __future__ import annotations

import io
import re
import stat
import sys
import tarfile
from pathlib import Path

import pytest

from harness.toolchain import (
    CACHE_ENV,
    SDIST_ENV,
    LlamaBuild,
    ToolchainError,
    _llama,
    converter_commit,
    converter_dir,
    llama_cpp_build,
)

component = pytest.mark.component("llama.cpp")

_FAKE_VERSION = "9.9.9"
_PREFIX = f"llama_cpp_python-{_FAKE_VERSION}"


def _fake_sdist(path: Path, files: dict[str, str], *, head: str | None = None) -> Path:
    members = {f"{_PREFIX}/{name}": text for name, text in files.items()}
    if head is not None:
        members[f"{_PREFIX}/.git/modules/vendor/llama.cpp/HEAD"] = head + "\n"
    with tarfile.open(path, "w:gz") as archive:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


_CONVERTER = {
    "vendor/llama.cpp/convert_hf_to_gguf.py": "print('hf')\n",
    "vendor/llama.cpp/convert_lora_to_gguf.py": "print('lora')\n",
    "vendor/llama.cpp/LICENSE": "MIT\n",
    "vendor/llama.cpp/conversion/__init__.py": "",
    "vendor/llama.cpp/gguf-py/gguf/__init__.py": "",
    "vendor/llama.cpp/requirements/requirements-convert_hf_to_gguf.txt": "torch\n",
    # everything else in the sdist stays behind
    "vendor/llama.cpp/src/llama.cpp": "int main() {}\n",
    "vendor/llama.cpp/README.md": "readme\n",
    "llama_cpp/__init__.py": "",
}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(root))
    monkeypatch.delenv(SDIST_ENV, raising=False)
    monkeypatch.setattr(_llama, "llama_cpp_python_version", lambda: _FAKE_VERSION)
    return root


def test_label_is_a_stable_one_liner() -> None:
    build = LlamaBuild(llama_cpp_python="0.3.36", commit="0c1e570", dirty=True, ggml_version="x")
    assert build.label == "llama-cpp-python 0.3.36 (llama.cpp 0c1e570)"


def test_unpacks_only_the_converter_once(cache: Path, tmp_path: Path) -> None:
    sdist = _fake_sdist(tmp_path / "sdist.tar.gz", _CONVERTER)
    lines: list[str] = []
    found = converter_dir(sdist=sdist, progress=lines.append)
    assert found == cache / "llama.cpp" / f"llama-cpp-python-{_FAKE_VERSION}"
    unpacked = sorted(str(p.relative_to(found)) for p in found.rglob("*") if p.is_file())
    assert unpacked == [
        "LICENSE",
        "conversion/__init__.py",
        "convert_hf_to_gguf.py",
        "convert_lora_to_gguf.py",
        "gguf-py/gguf/__init__.py",
        "requirements/requirements-convert_hf_to_gguf.txt",
    ]
    assert converter_commit(found) is None  # this sdist recorded no commit
    assert sorted(p.name for p in found.parent.iterdir()) == [found.name]  # no staging left

    sdist.unlink()  # cached: the second call needs no sdist at all
    assert converter_dir(sdist=sdist) == found


def test_the_sdist_can_come_from_the_environment(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SDIST_ENV, str(_fake_sdist(tmp_path / "s.tar.gz", _CONVERTER)))
    assert (converter_dir() / "convert_hf_to_gguf.py").read_text() == "print('hf')\n"


def test_an_sdist_without_a_converter_is_refused_and_leaves_nothing(
    cache: Path, tmp_path: Path
) -> None:
    incomplete = {k: v for k, v in _CONVERTER.items() if "lora" not in k}
    sdist = _fake_sdist(tmp_path / "sdist.tar.gz", incomplete)
    with pytest.raises(ToolchainError, match=r"no convert_lora_to_gguf\.py"):
        converter_dir(sdist=sdist)
    assert list((cache / "llama.cpp").iterdir()) == []


def test_a_missing_or_corrupt_sdist_is_a_toolchain_error(cache: Path, tmp_path: Path) -> None:
    with pytest.raises(ToolchainError, match="sdist not found"):
        converter_dir(sdist=tmp_path / "absent.tar.gz")
    corrupt = tmp_path / "corrupt.tar.gz"
    corrupt.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ToolchainError, match="cannot unpack the sdist"):
        converter_dir(sdist=corrupt)


def test_names_escaping_the_tree_are_not_extracted(cache: Path, tmp_path: Path) -> None:
    files = dict(_CONVERTER)
    files["vendor/llama.cpp/gguf-py/../../../../escaped.txt"] = "nope\n"
    converter_dir(sdist=_fake_sdist(tmp_path / "sdist.tar.gz", files))
    assert not list(tmp_path.rglob("escaped.txt"))


def test_a_failed_download_says_how_to_work_offline(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_python = tmp_path / "python"
    fake_python.write_text(
        "#!/bin/sh\necho 'ERROR: No matching distribution found for llama-cpp-python' >&2\nexit 1\n"
    )
    fake_python.chmod(fake_python.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(sys, "executable", str(fake_python))
    with pytest.raises(ToolchainError) as caught:
        converter_dir()
    assert "No matching distribution" in str(caught.value)
    assert SDIST_ENV in str(caught.value)
    assert list((cache / "llama.cpp").iterdir()) == []


@component
def test_a_converter_from_another_commit_is_refused(cache: Path, tmp_path: Path) -> None:
    _runtime_build()
    sdist = _fake_sdist(tmp_path / "sdist.tar.gz", _CONVERTER, head="f" * 40)
    with pytest.raises(
        ToolchainError, match=r"converter is from llama.cpp fffffff but the runtime"
    ):
        converter_dir(sdist=sdist)


def _runtime_build() -> LlamaBuild:
    try:
        return llama_cpp_build()
    except ToolchainError as error:
        pytest.skip(str(error))


@component
def test_runtime_identity_comes_from_the_loaded_library() -> None:
    import importlib.metadata

    build = _runtime_build()
    assert build.llama_cpp_python == importlib.metadata.version("llama_cpp_python")
    assert re.fullmatch(r"[0-9a-f]{7,}", build.commit)
    assert re.fullmatch(r"llama-cpp-python \S+ \(llama\.cpp [0-9a-f]{7,}\)", build.label)


@component
def test_the_real_converter_is_from_the_runtimes_commit() -> None:
    build = _runtime_build()
    try:
        found = converter_dir()
    except ToolchainError as error:
        pytest.skip(str(error))
    commit = converter_commit(found)
    assert commit is not None and commit.startswith(build.commit)
    assert (found / "gguf-py" / "gguf" / "constants.py").is_file()


def test_a_damaged_cache_entry_is_reported(cache: Path, tmp_path: Path) -> None:
    damaged = cache / "llama.cpp" / f"llama-cpp-python-{_FAKE_VERSION}"
    damaged.mkdir(parents=True)
    (damaged / "convert_hf_to_gguf.py").write_text("")
    with pytest.raises(ToolchainError, match="cannot install the converter here"):
        converter_dir(sdist=_fake_sdist(tmp_path / "sdist.tar.gz", _CONVERTER))
