"""The BuildKit builder: a Packerfile built by Docker, with the gguf-packer frontend.

``build_with_buildx`` runs ``docker buildx build`` with ``BUILDKIT_SYNTAX`` naming the frontend
image (so a Packerfile needs no ``# syntax=`` line), streams BuildKit's plain progress, exports
the image as an OCI layout and returns the same :class:`BuildResult` the native builder does,
so the same checks run on it. Three routes, chosen by what the Docker installation offers:

- buildx with a BuildKit container (``docker-container`` driver, as docker/setup-buildx-action
  makes): ``--output type=oci``;
- buildx on the daemon's own BuildKit (``docker`` driver, which cannot export OCI): ``--load``
  under a temporary tag, then ``docker save``;
- no buildx plugin, a daemon with BuildKit (Debian's docker.io 20.10): ``DOCKER_BUILDKIT=1
  docker build``, then ``docker save``. That client has no ``--build-context``, so named
  contexts need buildx.

``frontend=None`` leaves the choice to the daemon: its built-in Dockerfile frontend, which
knows FROM/ARG/COPY/ADD/LABEL/CMD but not CONVERT, QUANTIZE or CAT, and writes neither the
``gguf.model.*`` labels nor the seed's model config. A BuildKit build's layers and cache are
BuildKit's: ``compression`` only reaches buildx's OCI exporter, and the cache counts are read
from the progress (steps shown CACHED or not).
"""

from __future__ import annotations

import collections
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from harness.builder._docker_archive import import_archive
from harness.builder._native import BuildOptions, BuildResult, build
from harness.errors import BuildError, Location
from harness.oci import Image, OCIError, in_image_relative, read_layout, unpack
from harness.packerfile import cmd_roles, find_packerfile

__all__ = [
    "BUILDER_ENV",
    "BUILDX_BUILDER_ENV",
    "DEFAULT_FRONTEND",
    "FRONTEND_ENV",
    "build_with",
    "build_with_buildx",
]

DEFAULT_FRONTEND = "gpustack/gguf-packer:latest"
BUILDER_ENV = "GGUF_HARNESS_BUILDER"  # the GitHub Action's `builder` input
FRONTEND_ENV = "GGUF_HARNESS_FRONTEND"  # its `frontend` input
# A named buildx builder (`docker buildx create --name NAME --driver remote tcp://...`): where a
# runner is not enough, the build goes to a BuildKit elsewhere. The Action's `buildx-builder`.
BUILDX_BUILDER_ENV = "GGUF_HARNESS_BUILDX_BUILDER"
_BUILDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
BUILDERS = ("native", "buildx")
_REFERENCE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*(@sha256:[0-9a-f]{64})?$")
_PROBE_TIMEOUT = 60
_TAIL = 40
_STEP = re.compile(r"^#(\d+) \[(?:[^\]]* )?\d+/\d+\] ")
_CACHED = re.compile(r"^#(\d+) CACHED\s*$")
_EXPORT_COMPRESSION = {"gzip": "gzip", "zstd": "zstd", "none": "uncompressed"}


@dataclass(frozen=True)
class _Docker:
    """A Docker client that reaches a daemon, and what it can build with."""

    binary: str
    env: Mapping[str, str]
    buildx: bool
    driver: str | None  # buildx's driver: docker-container, docker, kubernetes, remote


def build_with_buildx(
    options: BuildOptions,
    *,
    frontend: str | None = DEFAULT_FRONTEND,
    docker: str = "docker",
    env: Mapping[str, str] | None = None,
    report: Callable[[str], None] | None = None,
    buildx_builder: str | None = None,
) -> BuildResult:
    """Build ``options`` with Docker's BuildKit into an OCI layout at ``options.output``.

    ``frontend`` is the BuildKit frontend image (a tag or ``name@sha256:...``), or None for
    the daemon's built-in Dockerfile frontend; ``docker`` the client to run and ``env`` its
    whole environment (default: this process's). ``report`` gets each progress line.
    ``buildx_builder`` (else ``$GGUF_HARNESS_BUILDX_BUILDER``) names the buildx builder to use
    (a remote BuildKit, say): buildx reads it from ``BUILDX_BUILDER`` for every command.
    """
    say = report or (lambda _line: None)
    if frontend is not None and not _REFERENCE.match(frontend):
        raise BuildError(f"frontend {frontend!r} is not an image reference")
    if not options.context.is_dir():
        raise BuildError(f"build context {options.context} is not a directory")
    packerfile = find_packerfile(options.context, options.packerfile)
    client_env = dict(os.environ if env is None else env)
    named = buildx_builder or client_env.get(BUILDX_BUILDER_ENV) or None
    if named is not None:
        if not _BUILDER_NAME.match(named):
            raise BuildError(f"buildx builder {named!r} is not a builder name")
        client_env["BUILDX_BUILDER"] = named
    client = _probe(docker, client_env, named)
    if options.contexts and not client.buildx:
        raise BuildError(
            "named build contexts need the docker buildx plugin: this Docker client has "
            "no --build-context (install docker-buildx, or use the native builder)",
            Location(packerfile),
        )
    output = options.output.absolute()
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{output.name}.buildx-", dir=output.parent) as tmp:
        archive = Path(tmp) / "image.tar"
        common = _arguments(options, packerfile, frontend)
        if client.buildx and client.driver != "docker":
            compression = _EXPORT_COMPRESSION.get(options.compression, "gzip")
            export = ["--output", f"type=oci,dest={archive},compression={compression}"]
            command = ["buildx", "build", *common, *export, str(options.context.absolute())]
            steps = _run(client, command, say, packerfile)
        else:
            common.append(str(options.context.absolute()))
            steps = _build_and_save(client, common, archive, say, packerfile)
        manifest = import_archive(archive, output, options.tag)
    image = read_layout(output, options.tag)
    hits = len(steps.cached & steps.steps)
    return BuildResult(
        output,
        options.tag,
        manifest,
        dict(image.config),
        _cmd_files(image),
        hits,
        len(steps.steps) - hits,
    )


def build_with(
    options: BuildOptions,
    *,
    builder: str | None = None,
    declared: str = "native",
    frontend: str | None = None,
    report: Callable[[str], None] | None = None,
    buildx_builder: str | None = None,
) -> BuildResult:
    """Build with the builder chosen by, first to last: ``builder`` (a command-line flag),
    ``$GGUF_HARNESS_BUILDER`` (the action's input), ``declared`` (model.yaml's
    ``build.builder``). A buildx build uses ``frontend``, else ``$GGUF_HARNESS_FRONTEND``, else
    the gguf-packer frontend."""
    chosen = builder or os.environ.get(BUILDER_ENV) or declared
    if chosen not in BUILDERS:
        raise BuildError(f"unknown builder {chosen!r}: native or buildx")
    if chosen == "native":
        return build(options, report=report)
    image = frontend or os.environ.get(FRONTEND_ENV) or DEFAULT_FRONTEND
    return build_with_buildx(options, frontend=image, report=report, buildx_builder=buildx_builder)


def _probe(docker: str, env: dict[str, str], named: str | None = None) -> _Docker:
    binary = shutil.which(docker, path=env.get("PATH", os.defpath))
    if binary is None:
        raise BuildError(
            f"no Docker client: {docker!r} is not on PATH (install Docker, or use the native "
            "builder)"
        )
    version = _quiet([binary, "version", "--format", "{{.Server.Version}}"], env)
    if version.returncode != 0:
        reason = _last_line(version.stderr) or f"exit status {version.returncode}"
        host = env.get("DOCKER_HOST", "the default socket")
        raise BuildError(f"no Docker daemon reachable at {host}: {reason}")
    buildx = _quiet([binary, "buildx", "version"], env).returncode == 0
    if named is not None and not buildx:
        raise BuildError(f"buildx builder {named!r}: this Docker client has no buildx plugin")
    driver = None
    if buildx:
        inspect = _quiet([binary, "buildx", "inspect"], env)
        if named is not None and inspect.returncode != 0:
            reason = _last_line(inspect.stderr) or f"exit status {inspect.returncode}"
            raise BuildError(f"buildx builder {named!r}: {reason}")
        inspected = inspect.stdout
        found = re.search(r"^Driver:\s*(\S+)", inspected, re.MULTILINE)
        driver = found.group(1) if found else None
    return _Docker(binary, env, buildx, driver)


def _arguments(options: BuildOptions, packerfile: Path, frontend: str | None) -> list[str]:
    """The flags ``docker build`` and ``docker buildx build`` share."""
    args = ["--progress=plain", "--file", str(packerfile.absolute())]
    for name, value in options.build_args.items():
        args += ["--build-arg", f"{name}={value}"]
    if frontend is not None:
        args += ["--build-arg", f"BUILDKIT_SYNTAX={frontend}"]
    if options.target:
        args += ["--target", options.target]
    for name, directory in options.contexts.items():
        args += ["--build-context", f"{name}={Path(directory).absolute()}"]
    for name, value in options.labels.items():
        args += ["--label", f"{name}={value}"]
    if options.no_cache:
        args.append("--no-cache")
    return args


@dataclass(frozen=True)
class _Steps:
    steps: set[str]  # progress ids of the Packerfile's own steps ("[2/3] COPY ...")
    cached: set[str]


def _build_and_save(
    client: _Docker,
    common: list[str],
    archive: Path,
    say: Callable[[str], None],
    packerfile: Path,
) -> _Steps:
    """Build into the daemon's image store under a tag of our own, save it, drop the tag."""
    tag = f"gguf-harness-build/{secrets.token_hex(8)}:latest"
    env = client.env
    if client.buildx:
        command = ["buildx", "build", "--load", "--tag", tag, *common]
    else:
        command = ["build", "--tag", tag, *common]
        env = {**env, "DOCKER_BUILDKIT": "1"}
    try:
        steps = _run(replace(client, env=env), command, say, packerfile)
        saved = _quiet([client.binary, "save", "--output", str(archive), tag], env, timeout=None)
        if saved.returncode != 0:
            raise BuildError(f"docker save failed: {_last_line(saved.stderr)}")
    finally:
        _quiet([client.binary, "image", "rm", tag], env)
    return steps


def _run(
    client: _Docker, args: Sequence[str], say: Callable[[str], None], packerfile: Path
) -> _Steps:
    """Run a build, handing each progress line to ``say``; BuildError with the tail on failure."""
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL)
    steps: set[str] = set()
    cached: set[str] = set()
    with subprocess.Popen(
        [client.binary, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(client.env),
        text=True,
        errors="replace",
        bufsize=1,
    ) as process:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.rstrip("\n")
            tail.append(line)
            say(line)
            if found := _STEP.match(line):
                steps.add(found.group(1))
            elif found := _CACHED.match(line):
                cached.add(found.group(1))
        code = process.wait()
    if code != 0:
        text = "\n".join(tail)
        command = "docker buildx build" if args[0] == "buildx" else "docker build"
        raise BuildError(f"{command} failed (exit status {code}):\n{text}", Location(packerfile))
    return _Steps(steps, cached)


def _cmd_files(image: Image) -> dict[str, Path]:
    """The GGUF files the image's Cmd names, unpacked once per manifest (harness.oci.unpack)."""
    inner = image.config.get("config")
    cmd = inner.get("Cmd") if isinstance(inner, Mapping) else None
    if not isinstance(cmd, list) or not all(isinstance(arg, str) for arg in cmd):
        return {}
    roles = cmd_roles(cmd)
    try:
        root = unpack(image, [role.path for role in roles])
    except OCIError as error:
        raise BuildError(f"CMD: {error}") from None
    return {role.path: root / in_image_relative(role.path) for role in roles}


def _quiet(
    command: list[str], env: Mapping[str, str], timeout: float | None = _PROBE_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            env=dict(env),
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(command, 1, "", str(exc))


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
