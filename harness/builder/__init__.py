"""Building model images from a Packerfile.

``build`` is the native builder: Python only, no Docker, a step cache that makes an unchanged
rebuild free, and images that are what GGUF Packer's BuildKit frontend produces.
``build_with_buildx`` builds the same options with Docker's BuildKit and that frontend;
``build_with`` picks one of the two (flag, then $GGUF_HARNESS_BUILDER, then model.yaml).
"""

from harness.builder._buildx import (
    BUILDX_BUILDER_ENV,
    DEFAULT_FRONTEND,
    build_with,
    build_with_buildx,
)
from harness.builder._native import (
    DEFAULT_COMPRESSION,
    LLAMA_CPP_LABEL,
    BuildOptions,
    BuildResult,
    build,
)
from harness.builder._store import cache_root
from harness.errors import BuildError

__all__ = [
    "BUILDX_BUILDER_ENV",
    "DEFAULT_COMPRESSION",
    "DEFAULT_FRONTEND",
    "LLAMA_CPP_LABEL",
    "BuildError",
    "BuildOptions",
    "BuildResult",
    "build",
    "build_with",
    "build_with_buildx",
    "cache_root",
]
