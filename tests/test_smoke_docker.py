"""The docker runner against a real (private) dockerd.

No llama.cpp server image can be pulled here, so what can be proven is proven: a missing image
is one clear error; the container the runner creates has host networking, the image's files
mounted read-only and the Cmd with its paths rewritten into the mount; a container that cannot
start is a clear error with Docker's own explanation, and is removed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from harness.smoke import (
    DockerRunner,
    ServerCommand,
    SmokeError,
    container_spec,
    create_container,
    start,
)
from tests.services import Dockerd

pytestmark = pytest.mark.component("dockerd")

FAKE_IMAGE = "gguf-harness-test/llama-server:none"


@pytest.fixture(scope="module")
def docker_host(dockerd: Dockerd, tmp_path_factory: pytest.TempPathFactory) -> str:
    if importlib.util.find_spec("docker") is None:
        pytest.skip("the Docker SDK (pip install docker) is not installed")
    # An image that looks like llama.cpp's server image but holds no llama-server.
    context = tmp_path_factory.mktemp("fake-image")
    (context / "README").write_text("not a llama-server\n")
    (context / "Dockerfile").write_text(
        'FROM scratch\nCOPY README /\nENTRYPOINT ["/app/llama-server"]\n'
    )
    dockerd.run("build", "--quiet", "--tag", FAKE_IMAGE, str(context))
    return dockerd.host


@pytest.fixture
def command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docker_host: str) -> ServerCommand:
    monkeypatch.setenv("DOCKER_HOST", docker_host)
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")  # never read: no llama-server runs here
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Your name is Zorblax.\n")
    return ServerCommand.from_gguf(model, ["-c", "512", "--system-prompt-file", str(prompt)])


def containers(dockerd: Dockerd) -> list[str]:
    listed = dockerd.run("ps", "--all", "--quiet", "--filter", "label=org.gguf-harness.smoke")
    return listed.stdout.split()


def test_a_missing_image_is_one_clear_error(command: ServerCommand, dockerd: Dockerd) -> None:
    runner = DockerRunner("gguf-harness-test/absent:1")
    with pytest.raises(SmokeError, match=r"image gguf-harness-test/absent:1 is not present; pull"):
        start(command, runner)
    assert containers(dockerd) == []


def test_the_container_it_creates(command: ServerCommand, dockerd: Dockerd) -> None:
    spec = container_spec(command, FAKE_IMAGE, "127.0.0.1", 8765)
    container = create_container(spec)
    try:
        container.reload()
        attrs = container.attrs
    finally:
        container.remove(force=True)
    assert attrs["HostConfig"]["NetworkMode"] == "host"
    (mount,) = attrs["Mounts"]
    assert (mount["Source"], mount["RW"]) == (str(command.root), False)
    target = mount["Destination"]
    assert attrs["Config"]["Cmd"] == [
        "-m", f"{target}/model.gguf", "-c", "512", "--host", "127.0.0.1", "--port", "8765",
    ]  # fmt: skip
    assert attrs["Config"]["Labels"]["org.gguf-harness.smoke"] == command.source
    assert not attrs["HostConfig"]["Privileged"]


def test_a_container_that_cannot_start_is_removed(
    command: ServerCommand, dockerd: Dockerd, tmp_path: Path
) -> None:
    with pytest.raises(SmokeError, match=r"cannot start the container: .*/app/llama-server"):
        start(command, DockerRunner(FAKE_IMAGE), log_dir=tmp_path / "log")
    assert containers(dockerd) == []
