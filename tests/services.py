"""Real services for the tests: a Docker engine and an OCI registry, started as the tests need them.

Fixtures (registered by tests/conftest.py):

- ``dockerd`` (session): a private dockerd (Debian's docker.io, 20.10) on a unix socket in a temp
  directory, with no bridge and no iptables rules. Yields a :class:`Dockerd`: ``.host`` is the
  ``DOCKER_HOST`` value, ``.env`` the environment to run clients with (``DOCKER_HOST``,
  ``DOCKER_BUILDKIT=1``, a private ``DOCKER_CONFIG``), ``.docker`` the client to run (Debian's
  ``/usr/bin/docker``, which builds with BuildKit without the buildx plugin) and ``.run(...)``,
  which runs that client and fails the test with the daemon's log when it fails.
- ``registry`` (session): a plain-HTTP registry (Debian's docker-registry, CNCF distribution 2.8)
  on ``127.0.0.1:<free port>`` with deletes enabled. Yields a :class:`Registry`.
- ``registry_factory`` (function): ``registry_factory(auth=True, tls=True)`` starts a variant:
  htpasswd basic auth (``.username``/``.password``) and/or TLS with a fresh self-signed CA
  (``.ca`` is the CA certificate, ``.cert_dir`` a directory skopeo's ``--cert-dir`` takes).
  Each registry started is stopped when the test ends.
- ``reflink_fs`` (module): a fresh XFS made with ``reflink=1`` in a sparse 2 GiB image,
  loop-mounted under pytest's temp directory and unmounted (image deleted) after: a filesystem
  where FICLONERANGE shares blocks, as XFS and btrfs do and ext4 does not. Needs root.

Each fixture skips when its program is not installed; a test using one must carry
``@pytest.mark.component("dockerd")`` / ``("registry")`` / ``("xfs")`` so that under CI=true the
skip fails. ``scripts/setup.sh`` installs the Debian packages (docker.io, docker-registry,
apache2-utils, openssl, xfsprogs). Every service listens on loopback only; logs stay in pytest's
temp directory and are shown when a service fails to start or a client call fails.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

__all__ = [
    "Dockerd",
    "Registry",
    "dockerd",
    "reflink_fs",
    "registry",
    "registry_factory",
    "start_dockerd",
    "start_registry",
]

DOCKER_CLIENT = "/usr/bin/docker"
_LOG_TAIL = 4000
# Variables that would point a client at another daemon, or at a proxy instead of loopback.
_STRIP = (
    "DOCKER_CONTEXT",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH",
    "DOCKER_CONFIG",
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
)


class ServiceError(RuntimeError):
    """A service did not start; the message carries the tail of its log."""


def _tail(path: Path, limit: int = _LOG_TAIL) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return text if len(text) <= limit else "...\n" + text[-limit:]


def _which(name: str, *extra_dirs: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in extra_dirs:
        candidate = Path(directory, name)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (callers retry on a clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL to the whole process group if it has not exited in ``timeout``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    # Whatever it left in its process group (dockerd's containerd) goes too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _kill_pidfile(pidfile: Path, marker: str) -> None:
    """SIGKILL the process a pidfile names if it is still there and its command line mentions
    ``marker`` (dockerd's containerd, should dockerd have died without stopping it)."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError):
        return
    if marker in cmdline:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _unmount_under(root: Path) -> None:
    """Unmount whatever is mounted under ``root``, deepest first (dockerd's overlays, netns)."""
    prefix = str(root.resolve())
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    points = []
    for line in lines:
        fields = line.split()
        if len(fields) > 4:
            point = fields[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _remove_tree(root: Path) -> None:
    _unmount_under(root)
    shutil.rmtree(root, ignore_errors=True)


# --- dockerd ---------------------------------------------------------------------------------


@dataclass
class Dockerd:
    """A running private dockerd."""

    host: str
    env: dict[str, str]
    docker: str
    root: Path
    log: Path
    startup_s: float

    def logs(self) -> str:
        return _tail(self.log)

    def run(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 300,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the docker client against this daemon; on failure (``check``) fail the test with
        the client's output and the daemon's log."""
        done = subprocess.run(
            [self.docker, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            env={**self.env, **(env or {})},
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            check=False,
        )
        if check and done.returncode != 0:
            pytest.fail(
                f"docker {' '.join(args)} exited {done.returncode}\n"
                f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}\n"
                f"--- dockerd log ({self.log})\n{self.logs()}",
                pytrace=False,
            )
        return done


def dockerd_missing() -> str | None:
    """Why a private dockerd cannot be started here, or None."""
    if _which("dockerd", "/usr/sbin", "/usr/bin") is None:
        return "dockerd is not installed (scripts/setup.sh installs Debian's docker.io)"
    if not os.access(DOCKER_CLIENT, os.X_OK):
        return f"{DOCKER_CLIENT} (Debian's docker.io client) is not installed"
    if os.geteuid() != 0:
        return "dockerd needs root"
    return None


@contextlib.contextmanager
def start_dockerd(log_dir: Path, *, timeout: float = 60) -> Iterator[Dockerd]:
    """Start a private dockerd, wait until it answers, yield it, stop it and remove its data.

    The data root lives in a short temp directory of its own (unix socket paths are limited to
    108 bytes; containerd's socket sits deep under the exec root); the log goes to ``log_dir``,
    which outlives the daemon.
    """
    binary = _which("dockerd", "/usr/sbin", "/usr/bin")
    assert binary is not None
    root = Path(tempfile.mkdtemp(prefix="dockerd-"))
    log = log_dir / "dockerd.log"
    socket_path = root / "docker.sock"
    host = f"unix://{socket_path}"
    config_file = root / "daemon.json"
    config_file.write_text("{}\n")  # not /etc/docker/daemon.json
    (root / "client").mkdir()
    command = [
        binary,
        f"--config-file={config_file}",
        f"--data-root={root / 'data'}",
        f"--exec-root={root / 'exec'}",
        f"--pidfile={root / 'docker.pid'}",
        f"--host={host}",
        "--bridge=none",
        "--iptables=false",
        "--ip6tables=false",
        "--ip-masq=false",
        "--userland-proxy=false",
    ]
    env = {k: v for k, v in os.environ.items() if k not in _STRIP}
    env |= {
        "DOCKER_HOST": host,
        "DOCKER_BUILDKIT": "1",
        "DOCKER_CONFIG": str(root / "client"),
        "NO_PROXY": "*",
        "no_proxy": "*",
    }
    started = time.monotonic()
    with log.open("ab") as out:
        out.write(f"$ {' '.join(command)}\n".encode())
        out.flush()
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    try:
        while True:
            if process.poll() is not None:
                raise ServiceError(f"dockerd exited {process.returncode}:\n{_tail(log)}")
            if socket_path.exists():
                probe = subprocess.run(
                    [DOCKER_CLIENT, "version", "--format", "{{.Server.Version}}"],
                    capture_output=True,
                    text=True,
                    env=env,
                    timeout=30,
                    check=False,
                )
                if probe.returncode == 0:
                    break
            if time.monotonic() - started > timeout:
                raise ServiceError(f"dockerd did not answer within {timeout}s:\n{_tail(log)}")
            time.sleep(0.1)
        yield Dockerd(host, env, DOCKER_CLIENT, root, log, time.monotonic() - started)
    finally:
        _stop(process, timeout=30)
        _kill_pidfile(root / "exec" / "containerd" / "containerd.pid", str(root))
        _remove_tree(root)


@pytest.fixture(scope="session")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockerd]:
    reason = dockerd_missing()
    if reason:
        pytest.skip(reason)
    try:
        with start_dockerd(tmp_path_factory.mktemp("dockerd")) as daemon:
            yield daemon
    except ServiceError as error:
        pytest.fail(str(error), pytrace=False)


# --- a reflink filesystem --------------------------------------------------------------------


def xfs_missing() -> str | None:
    if sys.platform != "linux":
        return "an XFS loop mount needs Linux"
    if os.geteuid() != 0:
        return "loop-mounting an XFS image needs root"
    if _which("mkfs.xfs", "/usr/sbin", "/sbin") is None:
        return "mkfs.xfs is not installed (scripts/setup.sh installs xfsprogs)"
    return None


@contextlib.contextmanager
def mount_xfs(directory: Path, size: int) -> Iterator[Path]:
    """A fresh XFS with reflinks in a sparse ``size``-byte image in ``directory``, mounted at
    ``directory/xfs``; unmounted and the image deleted after. ServiceError when it cannot."""
    image, mount = directory / "xfs.img", directory / "xfs"
    mount.mkdir()
    with image.open("wb") as sparse:
        sparse.truncate(size)  # takes only what the filesystem writes
    mkfs = _which("mkfs.xfs", "/usr/sbin", "/sbin") or "mkfs.xfs"
    make = [mkfs, "-q", "-m", "reflink=1", str(image)]
    for command in (make, ["mount", "-o", "loop", str(image), str(mount)]):
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            image.unlink()
            raise ServiceError(f"{' '.join(command)} failed: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True, check=False).returncode:
            _unmount_under(mount)  # lazily, when something still holds it
        image.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def reflink_fs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    reason = xfs_missing()
    if reason:
        pytest.skip(reason)
    try:
        with mount_xfs(tmp_path_factory.mktemp("reflink"), 2 << 30) as mount:
            yield mount
    except ServiceError as error:
        pytest.fail(str(error), pytrace=False)


# --- registry --------------------------------------------------------------------------------


@dataclass
class Registry:
    """A running docker-registry (CNCF distribution)."""

    host: str  # 127.0.0.1:PORT, what image references use
    url: str  # http://127.0.0.1:PORT or https://...
    root: Path  # storage.filesystem.rootdirectory
    config: Path
    log: Path
    username: str | None = None
    password: str | None = None
    ca: Path | None = None  # the CA certificate when serving TLS
    cert_dir: Path | None = None  # a directory holding only ca.crt: skopeo's --cert-dir
    startup_s: float = 0.0
    _ssl: ssl.SSLContext | None = field(default=None, repr=False)

    @property
    def tls(self) -> bool:
        return self.ca is not None

    def logs(self) -> str:
        return _tail(self.log)

    def skopeo_args(self, direction: str = "") -> list[str]:
        """skopeo flags to reach this registry: ``direction`` is "", "src" or "dest"."""
        prefix = f"--{direction}-" if direction else "--"
        args = [f"{prefix}tls-verify={'true' if self.tls else 'false'}"]
        if self.cert_dir is not None:
            args.append(f"{prefix}cert-dir={self.cert_dir}")
        if self.username is not None:
            args.append(f"{prefix}creds={self.username}:{self.password}")
        return args

    def request(
        self, path: str, *, method: str = "GET", auth: bool = True
    ) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request to the registry (no proxy): status, headers, body."""
        return _request(self, path, method=method, auth=auth)


def _request(
    registry: Registry, path: str, *, method: str = "GET", auth: bool = True
) -> tuple[int, dict[str, str], bytes]:
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if registry._ssl is not None:
        handlers.append(urllib.request.HTTPSHandler(context=registry._ssl))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(registry.url + path, method=method)
    if auth and registry.username is not None:
        token = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def registry_missing() -> str | None:
    if _which("docker-registry", "/usr/bin") is None:
        return "docker-registry is not installed (scripts/setup.sh installs it)"
    return None


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash for an htpasswd file: htpasswd (apache2-utils), else the ``bcrypt`` module,
    else the C library's crypt(3) (libxcrypt knows bcrypt; Python's ``crypt`` module until 3.13).
    """
    htpasswd = _which("htpasswd", "/usr/bin")
    if htpasswd is not None:
        done = subprocess.run(
            [htpasswd, "-nbB", "-C", "5", "user", password],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip().split(":", 1)[1]
    with contextlib.suppress(ImportError):
        import bcrypt  # type: ignore[import-not-found]

        return str(bcrypt.hashpw(password.encode(), bcrypt.gensalt(5)).decode())
    try:  # the crypt module is deprecated since 3.11 and gone in 3.13
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            crypt = importlib.import_module("crypt")
        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 5))
    except (ImportError, AttributeError, ValueError, OSError):
        hashed = None
    if hashed and hashed.startswith("$2"):
        return str(hashed)
    pytest.skip("no bcrypt: install apache2-utils (htpasswd) or the bcrypt package")


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ServiceError(f"openssl {' '.join(args)} failed:\n{done.stderr}")


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A self-signed CA and a server certificate for 127.0.0.1 and localhost signed by it:
    (ca.crt, server.crt, server.key)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (scripts/setup.sh installs it)")
    directory.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=gguf-harness test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "req", "-new", *ec, "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1",
        cwd=directory,
    )  # fmt: skip
    (directory / "server.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "server.ext",
        cwd=directory,
    )  # fmt: skip
    return directory / "ca.crt", directory / "server.crt", directory / "server.key"


@contextlib.contextmanager
def start_registry(
    directory: Path,
    *,
    auth: bool = False,
    tls: bool = False,
    username: str = "tester",
    password: str = "s3cret-pass",
    timeout: float = 30,
    attempts: int = 3,
    keep_storage: bool = False,
) -> Iterator[Registry]:
    """Start docker-registry with storage, config and log under ``directory``; yield it ready
    (``/v2/`` answers), stop it after. A port taken between choosing and binding is retried."""
    binary = _which("docker-registry", "/usr/bin")
    assert binary is not None
    directory.mkdir(parents=True, exist_ok=True)
    storage = directory / "storage"
    storage.mkdir(exist_ok=True)
    log = directory / "registry.log"
    config_path = directory / "config.yml"
    http: dict[str, object] = {"addr": ""}
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": http,
    }
    registry = Registry(host="", url="", root=storage, config=config_path, log=log)
    if tls:
        ca, cert, key = make_tls(directory / "tls")
        http["tls"] = {"certificate": str(cert), "key": str(key)}
        cert_dir = directory / "certs"
        cert_dir.mkdir(exist_ok=True)
        shutil.copy(ca, cert_dir / "ca.crt")
        registry.ca, registry.cert_dir = ca, cert_dir
        registry._ssl = ssl.create_default_context(cafile=str(ca))
    if auth:
        htpasswd = directory / "htpasswd"
        htpasswd.write_text(f"{username}:{bcrypt_hash(password)}\n")
        config["auth"] = {"htpasswd": {"realm": "gguf-harness-test", "path": str(htpasswd)}}
        registry.username, registry.password = username, password
    scheme = "https" if tls else "http"
    env = {k: v for k, v in os.environ.items() if k not in _STRIP}
    for attempt in range(attempts):
        port = free_port()
        http["addr"] = f"127.0.0.1:{port}"
        registry.host = f"127.0.0.1:{port}"
        registry.url = f"{scheme}://127.0.0.1:{port}"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        started = time.monotonic()
        with log.open("ab") as out:
            out.write(f"$ {binary} serve {config_path}  (attempt {attempt + 1})\n".encode())
            out.flush()
            process = subprocess.Popen(
                [binary, "serve", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        try:
            ready = _wait_registry(registry, process, started, timeout)
        except BaseException:
            _stop(process, timeout=10)
            raise
        if ready:
            registry.startup_s = time.monotonic() - started
            try:
                yield registry
            finally:
                _stop(process, timeout=10)
                if not keep_storage:  # images are large; the config and log stay
                    shutil.rmtree(storage, ignore_errors=True)
            return
        _stop(process, timeout=10)
        if "address already in use" not in _tail(log, 1000):
            break
    raise ServiceError(f"docker-registry did not start:\n{_tail(log)}")


def _wait_registry(
    registry: Registry, process: subprocess.Popen[bytes], started: float, timeout: float
) -> bool:
    """True once GET /v2/ answers (200, or 401 with auth); False if the process exited."""
    expected = 401 if registry.username is not None else 200
    while True:
        if process.poll() is not None:
            return False
        with contextlib.suppress(OSError):
            status, _headers, _body = registry.request("/v2/", auth=False)
            if status == expected:
                return True
            if status not in (502, 503):
                raise ServiceError(f"GET /v2/ answered {status}:\n{_tail(registry.log)}")
        if time.monotonic() - started > timeout:
            raise ServiceError(f"docker-registry did not answer within {timeout}s")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reason = registry_missing()
    if reason:
        pytest.skip(reason)
    try:
        with start_registry(tmp_path_factory.mktemp("registry")) as started:
            yield started
    except ServiceError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture
def registry_factory(tmp_path: Path) -> Iterator[Callable[..., Registry]]:
    """``registry_factory(auth=False, tls=False)``: start a registry for this test."""
    reason = registry_missing()
    if reason:
        pytest.skip(reason)
    with contextlib.ExitStack() as stack:
        count = 0

        def start(*, auth: bool = False, tls: bool = False) -> Registry:
            nonlocal count
            count += 1
            directory = tmp_path / f"registry{count}"
            try:
                return stack.enter_context(start_registry(directory, auth=auth, tls=tls))
            except ServiceError as error:
                pytest.fail(str(error), pytrace=False)

        yield start


@pytest.fixture
def no_user_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's docker logins and tokens stay out of a test (and its registries)."""
    for name in (
        "GGUF_HARNESS_REGISTRY_TOKEN",
        "GGUF_HARNESS_REGISTRY_USERNAME",
        "GGUF_HARNESS_REGISTRY_PASSWORD",
        "GITHUB_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))


def skopeo(*args: str) -> str:
    binary = shutil.which("skopeo")
    if binary is None:
        pytest.skip("skopeo is not installed (scripts/setup.sh installs it)")
    done = subprocess.run(
        [binary, "--insecure-policy", *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"skopeo {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout
