"""llama.cpp's own programs, built once from the pinned commit: options, cache, identity."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.toolchain import (
    BUILD_NUMBER,
    PROGRAMS,
    build_options,
    find_programs,
    llama_cpp_build,
    toolchain_report,
)
from harness.toolchain import _build_options as programs_module

COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
SAPPHIRE_RAPIDS = (
    "fpu sse4_2 avx avx2 bmi2 fma f16c avx_vnni avx512f avx512cd avx512vl avx512dq avx512bw"
    " avx512vbmi avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8"
)


def _options_for(monkeypatch: pytest.MonkeyPatch, flags: str, **env: str) -> list[str]:
    monkeypatch.setattr(programs_module, "cpu_flags", lambda: frozenset(flags.split()))
    monkeypatch.setattr(programs_module.platform, "machine", lambda: "x86_64")
    for name in ("GGUF_HARNESS_LLAMA_AMX", "GGUF_HARNESS_LLAMA_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return list(build_options().defines)


def test_cpu_features_come_from_the_kernel_and_amx_stays_off(monkeypatch: pytest.MonkeyPatch):
    defines = _options_for(monkeypatch, SAPPHIRE_RAPIDS, GGUF_HARNESS_LLAMA_BACKEND="cpu")
    assert "-DGGML_NATIVE=OFF" in defines  # never -march=native: it trusts raw CPUID
    assert "-DGGML_AVX512=ON" in defines and "-DGGML_AVX512_BF16=ON" in defines
    for amx in ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16"):
        assert f"-D{amx}=OFF" in defines


def test_amx_only_on_request_and_only_where_the_kernel_enables_it(
    monkeypatch: pytest.MonkeyPatch,
):
    asked = _options_for(monkeypatch, SAPPHIRE_RAPIDS, GGUF_HARNESS_LLAMA_AMX="1")
    assert "-DGGML_AMX_INT8=ON" in asked
    hidden = _options_for(monkeypatch, "sse4_2 avx avx2 avx512f", GGUF_HARNESS_LLAMA_AMX="1")
    assert "-DGGML_AMX_INT8=OFF" in hidden and "-DGGML_AVX512=OFF" in hidden


def test_the_cache_key_follows_every_option(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(programs_module, "cpu_flags", lambda: frozenset({"avx2"}))
    monkeypatch.setenv("GGUF_HARNESS_LLAMA_BACKEND", "cpu")
    first = build_options().key
    monkeypatch.setenv("GGUF_HARNESS_LLAMA_CMAKE_ARGS", "-DGGML_LTO=ON")
    assert build_options().key != first
    monkeypatch.setenv("GGUF_HARNESS_LLAMA_BACKEND", "rocm")
    with pytest.raises(Exception, match="expected cpu or cuda"):
        build_options()


def test_no_gpu_means_a_cpu_build_even_with_nvcc(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("GGUF_HARNESS_LLAMA_BACKEND", raising=False)
    monkeypatch.setattr(programs_module, "_has_gpu", lambda: False)
    monkeypatch.setattr(programs_module.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert build_options().backend == "cpu"
    monkeypatch.setattr(programs_module, "_has_gpu", lambda: True)
    assert build_options().backend == "cuda"


@pytest.mark.component("llama.cpp")
def test_the_build_is_cached_and_reports_one_identity():
    built = find_programs()
    if built is None:
        pytest.skip("llama.cpp's programs are not built (scripts/setup.sh builds them)")
    assert built.commit == COMMIT and built.build_number == BUILD_NUMBER
    for name in PROGRAMS:
        assert built.path(name).is_file()
    report = toolchain_report(built)
    for program in report.programs:
        # what each binary says of itself: "version: 0.5.0-dev (build 11312, commit 0c1e570)"
        if program.name != "llama-quantize":  # it has no --version
            assert f"build {BUILD_NUMBER}, commit {COMMIT[:7]}" in program.version, program
    # the in-process library is the same build: llama-cpp-python loads these libraries
    assert llama_cpp_build().commit == COMMIT[:7]
    assert report.library == COMMIT[:7]
    lib = Path(__import__("llama_cpp").__file__).parent / "lib"
    libllama = next(lib.glob("libllama.so*"))
    assert libllama.resolve().parent == built.bin_dir.resolve()


@pytest.mark.component("llama.cpp")
def test_toolchain_command_prints_json():
    if find_programs() is None:
        pytest.skip("llama.cpp's programs are not built (scripts/setup.sh builds them)")
    done = subprocess.run(
        [sys.executable, "-m", "harness", "toolchain", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(done.stdout)
    assert data["commit"] == COMMIT and data["build_number"] == BUILD_NUMBER
    assert set(data["programs"]) == set(PROGRAMS)
    assert data["converter"] and Path(data["converter"], "convert_hf_to_gguf.py").is_file()
