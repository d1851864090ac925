"""Building model images from a Packerfile.

``build`` is the native builder: Python only, no Docker, a step cache that makes an unchanged
rebuild free, and images that are what GGUF Packer's BuildKit frontend produces.
"""

from harness.build._errors import BuildError
from harness.build._native import LLAMA_CPP_LABEL, BuildOptions, BuildResult, build
from harness.build._store import cache_root

__all__ = ["LLAMA_CPP_LABEL", "BuildError", "BuildOptions", "BuildResult", "build", "cache_root"]
