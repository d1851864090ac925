"""Smoke inference: serve an image as its CMD says, ask it questions, judge and measure.

``ServerCommand`` (or ``server_command``) turns an image, a build result or a GGUF file into
llama-server arguments whose files are readable here; ``start`` serves it with a runner
(``llama-server``, ``llama-cpp-python`` or ``docker``; see ``runner_for``) and returns a healthy
``Server``; ``SmokeCheck.from_mapping`` reads a model.yaml check and ``run_check`` judges the
answer; ``smoke`` does all of that for one model and returns a ``SmokeRun`` with its
``RunMeasurements``. ``dry_run`` gives the exact launch without starting anything.
"""

from harness.errors import SmokeError
from harness.expect import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_SEED,
    DEFAULT_TIMEOUT,
    EmbeddingExpect,
    Message,
    SimilarityBound,
    SmokeCheck,
    TextExpect,
)

from ._checks import run_check
from ._command import SYSTEM_PROMPT_FLAG, ServerCommand, from_stored, server_command
from ._docker import (
    DEFAULT_IMAGE,
    IMAGE_ENV,
    ContainerSpec,
    Mount,
    container_spec,
    create_container,
)
from ._flags import CHAT_TEMPLATE_NAMES, Translation, translate_for_llama_cpp_python
from ._logs import server_error
from ._process import free_port
from ._proxy import front, ports, system_prompt_proxy, with_system_prompt
from ._records import Answer, Failure, RunMeasurements, SmokeResult, Timings
from ._run import SmokeRun, dry_run, smoke, start
from ._runners import (
    LLAMA_SERVER_ENV,
    RUNNER_ENV,
    RUNNERS,
    DockerRunner,
    Launch,
    LlamaCppPythonRunner,
    LlamaServerRunner,
    Runner,
    runner_for,
)
from ._server import Server

__all__ = [
    "CHAT_TEMPLATE_NAMES",
    "DEFAULT_IMAGE",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_SEED",
    "DEFAULT_TIMEOUT",
    "IMAGE_ENV",
    "LLAMA_SERVER_ENV",
    "RUNNERS",
    "RUNNER_ENV",
    "SYSTEM_PROMPT_FLAG",
    "Answer",
    "ContainerSpec",
    "DockerRunner",
    "EmbeddingExpect",
    "Failure",
    "Launch",
    "LlamaCppPythonRunner",
    "LlamaServerRunner",
    "Message",
    "Mount",
    "RunMeasurements",
    "Runner",
    "Server",
    "ServerCommand",
    "SimilarityBound",
    "SmokeCheck",
    "SmokeError",
    "SmokeResult",
    "SmokeRun",
    "TextExpect",
    "Timings",
    "Translation",
    "container_spec",
    "create_container",
    "dry_run",
    "free_port",
    "from_stored",
    "front",
    "ports",
    "run_check",
    "runner_for",
    "server_command",
    "server_error",
    "smoke",
    "start",
    "system_prompt_proxy",
    "translate_for_llama_cpp_python",
    "with_system_prompt",
]
