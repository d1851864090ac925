"""The three ways to serve an image, each turning a ServerCommand into an exact launch.

- ``llama-server``: the default. The toolchain's build (``harness.toolchain``), unless
  ``$GGUF_HARNESS_LLAMA_SERVER`` names another binary; the arguments go to it unchanged.
- ``llama-cpp-python``: the ``llama_cpp.server`` of the pinned llama-cpp-python (its ``[server]``
  extra), through ``_pyserver.py``, with the llama-server flags translated (``_flags``).
- ``docker``: llama.cpp's server image through the Docker SDK, host networking, the image's
  files mounted read-only (the seed's ``run``), see ``_docker``.

``runner_for(None)`` picks by ``$GGUF_HARNESS_RUNNER``, else llama-server: what the image's Cmd
is written for and what users deploy. The other runners are never chosen silently.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from harness.errors import SmokeError
from harness.toolchain import find_programs

from ._command import ServerCommand
from ._docker import DEFAULT_IMAGE, IMAGE_ENV, ContainerSpec, container_spec
from ._flags import translate_for_llama_cpp_python

__all__ = [
    "LLAMA_SERVER_ENV",
    "RUNNERS",
    "RUNNER_ENV",
    "DockerRunner",
    "Launch",
    "LlamaCppPythonRunner",
    "LlamaServerRunner",
    "Runner",
    "runner_for",
]

RUNNER_ENV = "GGUF_HARNESS_RUNNER"
LLAMA_SERVER_ENV = "GGUF_HARNESS_LLAMA_SERVER"
RUNNERS = ("llama-server", "llama-cpp-python", "docker")
_WRAPPER = Path(__file__).with_name("_pyserver.py")
_SERVER_EXTRA = ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "pydantic_settings")
_INSTALL = "pip install 'llama-cpp-python[server]==0.3.36'"


@dataclass(frozen=True)
class Launch:
    """Exactly what will be started. ``argv`` is the command as a list (never re-parsed by a
    shell); ``command_line`` is the same, quoted for a shell to read back to the same list."""

    runner: str
    argv: tuple[str, ...]  # for docker: the `docker run` line equivalent to ``container``
    health_path: str  # GET this until it answers 200
    # Files the start writes first (path -> text), e.g. an inline chat template.
    files: Mapping[Path, str] = field(default_factory=dict)
    container: ContainerSpec | None = None

    @property
    def command_line(self) -> str:
        return shlex.join(self.argv)


class Runner(Protocol):
    name: str

    def check(self) -> None:
        """Raise SmokeError saying what to install when this runner cannot work here."""

    def launch(self, command: ServerCommand, host: str, port: int, work_dir: Path) -> Launch:
        """The launch for ``command`` listening on ``host:port``; files go under ``work_dir``."""


class LlamaServerRunner:
    name = "llama-server"

    def __init__(self, binary: str | os.PathLike[str] | None = None) -> None:
        self._binary = os.fspath(binary) if binary is not None else None

    def binary(self) -> str | None:
        explicit = self._binary or os.environ.get(LLAMA_SERVER_ENV)
        if explicit:
            return shutil.which(explicit) or explicit
        built = find_programs()
        return str(built.path("llama-server")) if built is not None else None

    def check(self) -> None:
        binary = self.binary()
        if binary is None:
            raise SmokeError(
                "llama-server is not built: run scripts/setup.sh or `gguf-harness toolchain"
                f" --build` (or set {LLAMA_SERVER_ENV}, or choose another runner with --by)"
            )
        if not (Path(binary).is_file() and os.access(binary, os.X_OK)):
            raise SmokeError(f"llama-server {binary} is not an executable file")

    def launch(self, command: ServerCommand, host: str, port: int, work_dir: Path) -> Launch:
        binary = self.binary() or "llama-server"
        # -lv 4 first (the Cmd may still lower it): only then does llama.cpp's own account of
        # the load (context, buffer sizes) reach the log, which the measurements read.
        # llama-server reads its flags in order, so --host/--port last win over any in the Cmd.
        argv = (binary, "-lv", "4", *command.host_args(), "--host", host, "--port", str(port))
        return Launch(self.name, argv, "/health")


class LlamaCppPythonRunner:
    name = "llama-cpp-python"

    def __init__(self, python: str | os.PathLike[str] | None = None) -> None:
        self.python = os.fspath(python) if python is not None else sys.executable

    def check(self) -> None:
        if self.python != sys.executable:
            return  # another interpreter: its start will say what it lacks
        missing = [name for name in _SERVER_EXTRA if importlib.util.find_spec(name) is None]
        if missing:
            raise SmokeError(f"llama-cpp-python's server needs {', '.join(missing)}: {_INSTALL}")

    def launch(self, command: ServerCommand, host: str, port: int, work_dir: Path) -> Launch:
        translation = translate_for_llama_cpp_python(command.host_args())
        args = list(translation.args)
        files: dict[Path, str] = {}
        if translation.template_text is not None:
            template = work_dir / "chat-template.jinja"
            files[template] = translation.template_text
            args += ["--chat-template-file", str(template)]
        argv = (self.python, str(_WRAPPER), *args, "--host", host, "--port", str(port))
        return Launch(self.name, argv, "/v1/models", files)


class DockerRunner:
    name = "docker"

    def __init__(self, image: str | None = None, *, gpus: bool = False, pull: bool = False):
        self.image = image or os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE
        self.gpus = gpus
        self.pull = pull

    def check(self) -> None:
        if importlib.util.find_spec("docker") is None:
            raise SmokeError("the docker runner needs the Docker SDK: pip install docker")

    def launch(self, command: ServerCommand, host: str, port: int, work_dir: Path) -> Launch:
        spec = container_spec(command, self.image, host, port, gpus=self.gpus, pull=self.pull)
        return Launch(self.name, spec.docker_run(), "/health", container=spec)


def runner_for(name: str | None = None) -> Runner:
    """The runner called ``name`` (``auto``, one of RUNNERS), or the configured or automatic one."""
    chosen = name or os.environ.get(RUNNER_ENV) or "auto"
    if chosen == "llama-server":
        return LlamaServerRunner()
    if chosen == "llama-cpp-python":
        return LlamaCppPythonRunner()
    if chosen == "docker":
        return DockerRunner()
    if chosen != "auto":
        raise SmokeError(f"unknown runner {chosen!r}: auto, {', '.join(RUNNERS)}")
    return LlamaServerRunner()
