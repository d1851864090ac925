"""The pinned llama.cpp tools: its build identity, its converter (CONVERT) and quantizer (QUANTIZE).

``convert`` runs llama.cpp's own ``convert_hf_to_gguf.py`` (or ``convert_lora_to_gguf.py``), taken
from the llama-cpp-python sdist of the installed version so that converter and runtime share one
commit; ``quantize`` calls the library's ``llama_model_quantize`` in-process, or a
``llama-quantize`` binary when one is configured.
"""

from __future__ import annotations

from harness.errors import ToolchainError

from ._convert import CONVERT_CLASSES, CONVERT_TYPES, convert
from ._imatrix import Imatrix, load_imatrix
from ._llama import (
    CACHE_ENV,
    SDIST_ENV,
    LlamaBuild,
    Progress,
    cache_dir,
    converter_commit,
    converter_dir,
    llama_cpp_build,
    llama_cpp_python_version,
    sdist_archive,
)
from ._process import ToolRun, run_tool
from ._programs import (
    BUILD_NUMBER,
    PROGRAMS,
    BuildOptions,
    Programs,
    build_options,
    build_programs,
    cpu_flags,
    find_programs,
    link_python_library,
    program,
)
from ._qtypes import GGML_TYPES, QUANTIZE_TYPES, REMOVED_TYPES, QuantizeOptions, quantize_options
from ._quantize import IN_PROCESS, QUANTIZE_BINARY_ENV, quantize, quantize_command
from ._report import ProgramInfo, ToolchainReport, toolchain_report
from ._server_args import (
    ServerArg,
    ServerArgs,
    ServerArgsError,
    ServerOption,
    parse_server_args,
    render_options,
    server_option,
)

__all__ = [
    "BUILD_NUMBER",
    "CACHE_ENV",
    "CONVERT_CLASSES",
    "CONVERT_TYPES",
    "GGML_TYPES",
    "IN_PROCESS",
    "PROGRAMS",
    "QUANTIZE_BINARY_ENV",
    "QUANTIZE_TYPES",
    "REMOVED_TYPES",
    "SDIST_ENV",
    "BuildOptions",
    "Imatrix",
    "LlamaBuild",
    "ProgramInfo",
    "Programs",
    "Progress",
    "QuantizeOptions",
    "ServerArg",
    "ServerArgs",
    "ServerArgsError",
    "ServerOption",
    "ToolRun",
    "ToolchainError",
    "ToolchainReport",
    "build_options",
    "build_programs",
    "cache_dir",
    "convert",
    "converter_commit",
    "converter_dir",
    "cpu_flags",
    "find_programs",
    "link_python_library",
    "llama_cpp_build",
    "llama_cpp_python_version",
    "load_imatrix",
    "parse_server_args",
    "program",
    "quantize",
    "quantize_command",
    "quantize_options",
    "render_options",
    "run_tool",
    "sdist_archive",
    "server_option",
    "toolchain_report",
]
