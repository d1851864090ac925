"""gguf-harness: build, validate, estimate, smoke-test and publish GGUF models."""

from harness.errors import ArtifactError, GGUFError, HarnessError, SpecError, UsageError

__all__ = ["ArtifactError", "GGUFError", "HarnessError", "SpecError", "UsageError", "__version__"]

__version__ = "0.1.0"
