"""How llama.cpp is compiled here: the backend, the CPU features, every CMake option that changes
the code, and the compiler; together they key the cached build.

CPU features are chosen explicitly (``GGML_NATIVE=OFF``) from what the kernel says it enables in
``/proc/cpuinfo``, never from raw CPUID as ``-march=native`` does; AMX stays off unless
``$GGUF_HARNESS_LLAMA_AMX=1`` (docs/toolchain.md says why).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ToolchainError

__all__ = ["AMX_ENV", "BACKEND_ENV", "CMAKE_ARGS_ENV", "BuildOptions", "build_options", "cpu_flags"]

BACKEND_ENV = "GGUF_HARNESS_LLAMA_BACKEND"  # cpu | cuda (default: cuda when nvcc and a GPU)
CMAKE_ARGS_ENV = "GGUF_HARNESS_LLAMA_CMAKE_ARGS"  # extra -D options, part of the cache key
AMX_ENV = "GGUF_HARNESS_LLAMA_AMX"

# /proc/cpuinfo flag(s) -> ggml's CMake option. All listed flags must be present.
_CPU_OPTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("GGML_SSE42", ("sse4_2",)),
    ("GGML_AVX", ("avx",)),
    ("GGML_AVX2", ("avx2",)),
    ("GGML_BMI2", ("bmi2",)),
    ("GGML_FMA", ("fma",)),
    ("GGML_F16C", ("f16c",)),
    ("GGML_AVX_VNNI", ("avx_vnni",)),
    ("GGML_AVX512", ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw")),
    ("GGML_AVX512_VBMI", ("avx512vbmi",)),
    ("GGML_AVX512_VNNI", ("avx512_vnni",)),
    ("GGML_AVX512_BF16", ("avx512_bf16",)),
)
_AMX_OPTIONS = (
    ("GGML_AMX_TILE", ("amx_tile",)),
    ("GGML_AMX_INT8", ("amx_int8",)),
    ("GGML_AMX_BF16", ("amx_bf16",)),
)


@dataclass(frozen=True)
class BuildOptions:
    """How llama.cpp is compiled: the backend and every CMake option that changes the code."""

    backend: str  # "cpu" or "cuda"
    defines: tuple[str, ...]  # "-DNAME=VALUE", in a fixed order
    compiler: str  # the first line of `cc --version`: a compiler upgrade is a new build

    @property
    def key(self) -> str:
        text = json.dumps([self.backend, self.defines, self.compiler])
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def cpu_flags() -> frozenset[str]:
    """The CPU features the kernel reports usable (``/proc/cpuinfo``), as the build chose them."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def _has_gpu() -> bool:
    return Path("/dev/nvidia0").exists() or Path("/dev/nvidiactl").exists()


def _compiler() -> str:
    compiler = os.environ.get("CC") or shutil.which("cc") or "cc"
    try:
        done = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False)
    except OSError as error:
        raise ToolchainError(f"no C compiler to build llama.cpp with ({error})") from error
    return (done.stdout.splitlines() or ["unknown"])[0].strip()


def build_options() -> BuildOptions:
    """The options for this machine: CPU features the kernel enables, CUDA when it can run."""
    backend = os.environ.get(BACKEND_ENV) or (
        "cuda" if shutil.which("nvcc") and _has_gpu() else "cpu"
    )
    if backend not in ("cpu", "cuda"):
        raise ToolchainError(f"{BACKEND_ENV}={backend!r}: expected cpu or cuda")
    defines = [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DBUILD_SHARED_LIBS=ON",
        "-DGGML_NATIVE=OFF",
        "-DGGML_CCACHE=OFF",
        f"-DGGML_CUDA={'ON' if backend == 'cuda' else 'OFF'}",
    ]
    if platform.machine() in ("x86_64", "AMD64"):
        flags = cpu_flags()
        amx = os.environ.get(AMX_ENV) == "1"
        for option, needs in (*_CPU_OPTIONS, *_AMX_OPTIONS):
            wanted = all(flag in flags for flag in needs)
            if option.startswith("GGML_AMX"):
                wanted = wanted and amx
            defines.append(f"-D{option}={'ON' if wanted else 'OFF'}")
    if backend == "cuda":
        defines.append("-DCMAKE_CUDA_ARCHITECTURES=native")
    defines += os.environ.get(CMAKE_ARGS_ENV, "").split()
    return BuildOptions(backend, tuple(defines), _compiler())
