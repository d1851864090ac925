"""llama.cpp's server container, run through the Docker SDK as the seed's ``run`` runs it.

The seed runs ``docker run --rm -it --privileged -p 8080:8080 -v <layers>:/gp-xxxx IMAGE <Cmd>
--host 0.0.0.0``. Here the container uses host networking and listens on 127.0.0.1 (nothing
leaves loopback, and no port mapping is needed), the image's files are mounted read-only, and
it is not privileged (llama-server needs no privilege; ``gpus`` asks for the GPUs instead).
The image is never pulled unless asked: a missing image is an error that says so.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import SmokeError

from ._command import ServerCommand

__all__ = [
    "DEFAULT_IMAGE",
    "IMAGE_ENV",
    "ContainerHandle",
    "ContainerSpec",
    "Mount",
    "container_spec",
]

IMAGE_ENV = "GGUF_HARNESS_LLAMA_IMAGE"
# The seed's image was ghcr.io/ggerganov/llama.cpp:server; the project has since moved to ggml-org.
DEFAULT_IMAGE = "ghcr.io/ggml-org/llama.cpp:server"
LABEL = "org.gguf-harness.smoke"


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class ContainerSpec:
    """The container the docker runner creates, in the terms of ``docker run``."""

    image: str
    command: tuple[str, ...]
    name: str
    mounts: tuple[Mount, ...]
    network_mode: str = "host"
    gpus: bool = False
    pull: bool = False  # pull the image when it is missing (else: an error saying so)
    labels: Mapping[str, str] = field(default_factory=dict)

    def create_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the SDK's ``containers.create`` (GPUs are added there)."""
        return {
            "image": self.image,
            "command": list(self.command),
            "name": self.name,
            "labels": dict(self.labels),
            "network_mode": self.network_mode,
            "volumes": {
                str(m.source): {"bind": m.target, "mode": "ro" if m.read_only else "rw"}
                for m in self.mounts
            },
            "detach": True,
        }

    def docker_run(self) -> tuple[str, ...]:
        """The ``docker run`` command line that creates the same container."""
        argv = ["docker", "run", "--rm", "--name", self.name, "--network", self.network_mode]
        for key, value in sorted(self.labels.items()):
            argv += ["--label", f"{key}={value}"]
        for m in self.mounts:
            argv += ["--volume", f"{m.source}:{m.target}:{'ro' if m.read_only else 'rw'}"]
        if self.gpus:
            argv += ["--gpus", "all"]
        return (*argv, self.image, *self.command)


def container_spec(
    command: ServerCommand,
    image: str,
    host: str,
    port: int,
    *,
    gpus: bool = False,
    pull: bool = False,
) -> ContainerSpec:
    seed = command.digest or str(command.root)
    mount = "/gp-" + hashlib.sha256(seed.encode()).hexdigest()[:8]
    args = (*command.mounted_args(mount), "--host", host, "--port", str(port))
    return ContainerSpec(
        image,
        args,
        f"gguf-harness-{port}",
        (Mount(command.root, mount),),
        gpus=gpus,
        pull=pull,
        labels={LABEL: command.source},
    )


def create_container(spec: ContainerSpec) -> Any:
    """Create (not start) the container ``spec`` describes; the SDK's Container object."""
    docker = importlib.import_module("docker")
    errors = docker.errors
    try:
        client = docker.from_env()
        client.ping()
    except errors.DockerException as error:
        raise SmokeError(f"cannot reach the Docker daemon: {error}") from None
    try:
        client.images.get(spec.image)
    except errors.ImageNotFound:
        if not spec.pull:
            raise SmokeError(
                f"the Docker image {spec.image} is not present; pull it "
                f"(docker pull {spec.image}) or name another with {IMAGE_ENV}"
            ) from None
        try:
            client.images.pull(spec.image)
        except errors.DockerException as error:
            raise SmokeError(f"cannot pull {spec.image}: {_explain(error)}") from None
    kwargs = spec.create_kwargs()
    if spec.gpus:
        kwargs["device_requests"] = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
    try:
        return client.containers.create(**kwargs)
    except errors.DockerException as error:
        raise SmokeError(f"cannot create the container: {_explain(error)}") from None


class ContainerHandle:
    """A started container; its log is copied to ``log_path`` by a thread. Containers still
    running when the interpreter exits are removed then."""

    def __init__(self, spec: ContainerSpec, log_path: Path) -> None:
        self.container: Any = create_container(spec)
        _LIVE.add(self)
        try:
            self.container.start()
        except Exception as error:  # the SDK's APIError, or a dropped connection
            self.remove()
            raise SmokeError(f"cannot start the container: {_explain(error)}") from None
        self.log_path = log_path
        self._thread = threading.Thread(target=self._copy_log, daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int | None:
        with contextlib.suppress(Exception):
            self.container.reload()
            return int(self.container.attrs["State"]["Pid"]) or None
        return None

    @property
    def returncode(self) -> int | None:
        try:
            self.container.reload()
        except Exception:
            return -1  # gone altogether
        state = self.container.attrs["State"]
        return None if state.get("Running") else int(state.get("ExitCode", -1))

    def alive(self) -> bool:
        return self.returncode is None

    def stop(self, grace: float = 5.0) -> int | None:
        code = None
        with contextlib.suppress(Exception):
            self.container.stop(timeout=max(0, round(grace)))
            code = self.returncode
        self.remove()
        self._thread.join(timeout=5)
        return code

    def remove(self) -> None:
        with contextlib.suppress(Exception):
            self.container.remove(force=True)
        _LIVE.discard(self)

    def _copy_log(self) -> None:
        with self.log_path.open("ab") as log, contextlib.suppress(Exception):
            for chunk in self.container.logs(stream=True, follow=True):
                log.write(chunk)
                log.flush()


_LIVE: set[ContainerHandle] = set()


@atexit.register
def _remove_all() -> None:
    for handle in list(_LIVE):
        handle.remove()


def _explain(error: Any) -> str:
    explanation = getattr(error, "explanation", None)
    return str(explanation or error)
