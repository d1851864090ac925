"""Faults between us and a real registry (Debian's docker-registry on loopback).

A small HTTP proxy on 127.0.0.1 sits in front of the registry to break things on cue: reset a
connection in the middle of an upload, answer 503, alter a blob on its way to us, kill the
registry in the middle of a push, or stand in for a token service (the Bearer flow, which the
Debian registry cannot do without a signing service of its own).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import os
import signal
import socket
import struct
import tarfile
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from harness.distribution import (
    AuthError,
    Credentials,
    DigestError,
    RegistryClient,
    RegistryError,
    RegistryOptions,
    RetryPolicy,
    pull_layout,
    push_layout,
)
from harness.oci import LayerEntry, LayoutWriter
from harness.store import Store, UnsafeLayerError
from tests.services import Registry, registry_missing, start_registry
from tests.throttle import serve

pytestmark = [pytest.mark.component("registry"), pytest.mark.usefixtures("no_user_credentials")]

FAST = RetryPolicy(attempts=3, backoff=0.05, max_wait=0.2)


SECRET = "bearer-secret-not-for-logs"
_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class Proxy:
    """An HTTP reverse proxy on loopback with hooks: ``fault(method, path)`` may return
    "reset" or a status to answer instead of forwarding; ``alter(method, path)`` flips a byte
    of the upstream's answer; ``before(method, path)`` runs first (to kill the registry)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.requests: list[tuple[str, str]] = []
        self.fault: Callable[[str, str], str | int | None] = lambda m, p: None
        self.alter: Callable[[str, str], bool] = lambda m, p: False
        self.before: Callable[[str, str], None] = lambda m, p: None
        self.bearer: tuple[str, str] | None = None  # (user, password) the token service takes
        self.token_requests: list[dict[str, list[str]]] = []
        self._lock = threading.Lock()
        self.server, self.host = serve(self._handle)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def count(self, method: str, fragment: str = "") -> int:
        return sum(1 for m, p in self.requests if m == method and fragment in p)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        method, path = handler.command, handler.path
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        with self._lock:
            self.requests.append((method, path))
        if self.bearer is not None and not self._authorized(handler, method, path):
            return
        self.before(method, path)
        fault = self.fault(method, path)
        if fault == "reset":
            # RST instead of FIN: what a crashed server or a middlebox looks like to a client.
            handler.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            handler.close_connection = True
            handler.connection.close()
            return
        if isinstance(fault, int):
            self._answer(handler, fault, {}, b"")
            return
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP}
        headers.pop("Authorization", None) if self.bearer else None
        connection = http.client.HTTPConnection(self.upstream, timeout=30)
        try:
            connection.request(method, path, body=body if length else None, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except OSError:
            self._answer(handler, 502, {}, b"")
            return
        finally:
            connection.close()
        if data and self.alter(method, path):
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
        answer = {k: v for k, v in response.getheaders() if k.lower() not in _HOP}
        self._answer(handler, response.status, answer, data, head=method == "HEAD")

    def _answer(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        headers: dict[str, str],
        data: bytes,
        head: bool = False,
    ) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            if key.lower() != "content-length":
                handler.send_header(key, value)
        length = headers.get("Content-Length") if head else str(len(data))
        handler.send_header("Content-Length", length or "0")
        handler.end_headers()
        if data and not head:
            handler.wfile.write(data)

    def _authorized(self, handler: BaseHTTPRequestHandler, method: str, path: str) -> bool:
        """A token service at /token and a registry that wants its tokens."""
        assert self.bearer is not None
        user, password = self.bearer
        parts = urllib.parse.urlsplit(path)
        if parts.path == "/token":
            self.token_requests.append(urllib.parse.parse_qs(parts.query))
            expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            if handler.headers.get("Authorization") != expected:
                self._answer(handler, 401, {}, b'{"details":"bad credentials"}')
                return False
            body = json.dumps({"token": SECRET, "expires_in": 300}).encode()
            self._answer(handler, 200, {"Content-Type": "application/json"}, body)
            return False
        if handler.headers.get("Authorization") == f"Bearer {SECRET}":
            return True
        repo = parts.path.split("/v2/", 1)[-1].split("/blobs/")[0].split("/manifests/")[0]
        challenge = f'Bearer realm="http://{self.host}/token",service="proxy-test"'
        if repo and repo != parts.path:
            challenge += f',scope="repository:{repo}:pull,push"'
        self._answer(handler, 401, {"WWW-Authenticate": challenge}, b"")
        return False


@pytest.fixture
def proxied(registry: Registry) -> Iterator[Proxy]:
    proxy = Proxy(registry.host)
    yield proxy
    proxy.close()


def _layout(path: Path, size: int) -> Path:
    """An image with one incompressible layer of about ``size`` bytes (stored uncompressed)."""
    with LayoutWriter(path) as writer:
        layer = writer.add_layer([LayerEntry("/m/model.gguf", os.urandom(size))], "none")
        config = {
            "architecture": "amd64",
            "config": {"Cmd": ["-m", "/m/model.gguf"]},
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        }
        writer.tag(writer.add_image(config, [layer]), "v1")
    return path


def _layer_digest(layout: Path) -> tuple[str, int]:
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(
        (layout / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text()
    )
    return manifest["layers"][0]["digest"], manifest["layers"][0]["size"]


def _manifest_digest(layout: Path) -> str:
    return str(json.loads((layout / "index.json").read_text())["manifests"][0]["digest"])


def test_connection_reset_mid_upload_resumes_where_the_registry_stopped(
    proxied: Proxy, tmp_path: Path
) -> None:
    chunk = 256 << 10
    layout = _layout(tmp_path / "layout", 2 << 20)
    digest, size = _layer_digest(layout)
    patches = 0

    def fault(method: str, path: str) -> str | None:
        nonlocal patches
        if method == "PATCH":
            patches += 1
            return "reset" if patches == 3 else None
        return None

    proxied.fault = fault
    options = RegistryOptions(insecure=True, chunk_size=chunk, retry=FAST)
    result = push_layout(layout, f"{proxied.host}/faults/resume:v1", options=options)
    assert digest in result.uploaded
    # One chunk went twice, not the whole blob: the upload resumed at the registry's offset.
    # (bytes_sent also counts the config, a few hundred bytes.)
    assert size + chunk <= result.bytes_sent < size + chunk + 4096
    assert proxied.count("GET", "/blobs/uploads/") >= 1  # asked the registry where it stood
    pulled = pull_layout(f"{proxied.host}/faults/resume:v1", tmp_path / "back", options=options)
    assert pulled.manifest.digest == _manifest_digest(layout)


def test_transient_errors_are_retried(proxied: Proxy, tmp_path: Path) -> None:
    layout = _layout(tmp_path / "layout", 64 << 10)
    seen: dict[str, int] = {}

    def fault(method: str, path: str) -> int | None:
        key = f"{method} {path.split('?')[0].rsplit('/', 2)[-2]}"
        seen[key] = seen.get(key, 0) + 1
        return 503 if seen[key] == 1 and method in ("PUT", "HEAD", "GET") else None

    proxied.fault = fault
    options = RegistryOptions(insecure=True, retry=FAST)
    result = push_layout(layout, f"{proxied.host}/faults/retry:v1", options=options)
    assert result.manifests_put == 1
    assert proxied.count("PUT", "/manifests/v1") == 2  # the first answered 503


def test_registry_killed_mid_push_then_rerun_completes(tmp_path: Path) -> None:
    missing = registry_missing()
    if missing:
        pytest.skip(missing)
    layout = _layout(tmp_path / "layout", 3 << 20)
    digest, size = _layer_digest(layout)
    directory = tmp_path / "registry"
    options = RegistryOptions(insecure=True, chunk_size=256 << 10, retry=FAST)
    with start_registry(directory) as first:
        proxy = Proxy(first.host)
        patches = 0

        def kill_on_fourth_patch(method: str, path: str) -> None:
            nonlocal patches
            if method == "PATCH":
                patches += 1
                if patches == 4:
                    os.kill(_pid_of(first), signal.SIGKILL)

        proxy.before = kill_on_fourth_patch
        try:
            with pytest.raises(RegistryError):
                push_layout(layout, f"{proxy.host}/faults/killed:v1", options=options)
        finally:
            proxy.close()
    # Same storage, new process (and port): the re-run finds what was committed and finishes.
    with start_registry(directory) as second:
        result = push_layout(layout, f"{second.host}/faults/killed:v1", options=options)
        assert digest in result.uploaded
        with RegistryClient(second.host, options) as client:
            assert client.blob_size("faults/killed", digest) == size
            stored = client.get_manifest("faults/killed", "v1")
        assert stored.digest == _manifest_digest(layout) == result.descriptor.digest
        store = Store(tmp_path / "store")
        model = store.pull(f"{second.host}/faults/killed:v1", options=options)
        assert model.path("/m/model.gguf").stat().st_size == 3 << 20


def _pid_of(registry: Registry) -> int:
    """The docker-registry process serving ``registry`` (found by its config file)."""
    wanted = str(registry.config).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"docker-registry") and wanted in argv:
            return int(entry.name)
    raise AssertionError("registry process not found")


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
        for p in sorted(root.rglob("*"))
        if not p.is_symlink()
    }


def test_blob_altered_in_flight_fails_the_pull_and_leaves_the_store_alone(
    proxied: Proxy, registry: Registry, tmp_path: Path
) -> None:
    layout = _layout(tmp_path / "layout", 256 << 10)
    options = RegistryOptions(insecure=True, retry=FAST)
    push_layout(layout, f"{registry.host}/faults/altered:v1", options=options)
    store = Store(tmp_path / "store")
    store.add_layout(_layout(tmp_path / "other", 1000), "127.0.0.1:1/other:v1")
    before = _snapshot(store.root)
    digest, _ = _layer_digest(layout)
    proxied.alter = lambda method, path: method == "GET" and path.endswith(digest)
    with pytest.raises(DigestError, match="does not match its descriptor"):
        store.pull(f"{proxied.host}/faults/altered:v1", options=options)
    assert _snapshot(store.root) == before
    with pytest.raises(DigestError):
        pull_layout(f"{proxied.host}/faults/altered:v1", tmp_path / "out", options=options)
    assert not (tmp_path / "out").exists()
    # A manifest altered in flight is caught too (against the digest the registry states).
    proxied.alter = lambda method, path: method == "GET" and path.endswith("/manifests/v1")
    with pytest.raises(DigestError, match="manifest content hashes to"):
        store.pull(f"{proxied.host}/faults/altered:v1", options=options)
    assert _snapshot(store.root) == before


def test_bearer_token_flow(
    proxied: Proxy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    proxied.bearer = ("robot", "robot-password")
    config = tmp_path / "docker" / "config.json"
    config.parent.mkdir()
    auth = base64.b64encode(b"robot:robot-password").decode()
    config.write_text(json.dumps({"auths": {proxied.host: {"auth": auth}}}))
    layout = _layout(tmp_path / "layout", 64 << 10)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOCKER_CONFIG", str(config.parent))
        options = RegistryOptions(insecure=True, retry=FAST)
        result = push_layout(layout, f"{proxied.host}/faults/bearer:v1", options=options)
        pulled = pull_layout(f"{proxied.host}/faults/bearer:v1", tmp_path / "back", options=options)
    assert pulled.manifest.digest == result.descriptor.digest
    scopes = [scope for request in proxied.token_requests for scope in request.get("scope", [])]
    assert "repository:faults/bearer:pull,push" in scopes
    assert all(r.get("service") == ["proxy-test"] for r in proxied.token_requests)
    wrong = RegistryOptions(insecure=True, retry=FAST, credentials=Credentials("robot", "nope"))
    with pytest.raises(AuthError) as caught:
        push_layout(layout, f"{proxied.host}/faults/bearer:v2", options=wrong)
    assert "refused" in str(caught.value)
    assert "nope" not in str(caught.value) and "robot-password" not in caplog.text
    assert SECRET not in caplog.text and SECRET not in str(caught.value)


def _dotdot(info: tarfile.TarInfo) -> None:
    info.name = "../x"


def _escaping_link(info: tarfile.TarInfo) -> None:
    info.type, info.linkname = tarfile.SYMTYPE, "../../etc/passwd"


@pytest.mark.parametrize("member", [_dotdot, _escaping_link])
def test_hostile_layer_from_a_registry_is_refused(
    registry: Registry,
    tmp_path: Path,
    member: Callable[[tarfile.TarInfo], None],
) -> None:
    info = tarfile.TarInfo("models/model.gguf")
    member(info)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        tar.addfile(info, io.BytesIO(b"") if info.isreg() else None)
    data = raw.getvalue()
    with LayoutWriter(tmp_path / "hostile") as writer:
        layer = writer.add_blob(data, "application/vnd.oci.image.layer.v1.tar")
        config = {"config": {}, "rootfs": {"type": "layers", "diff_ids": [layer.digest]}}
        writer.tag(writer.add_image(config, [layer]), "v1")
    options = RegistryOptions(insecure=True, retry=FAST)
    ref = f"{registry.host}/faults/{tmp_path.name.lower()}:v1"
    push_layout(tmp_path / "hostile", ref, options=options)
    store = Store(tmp_path / "store")
    store.add_layout(_layout(tmp_path / "good", 100), "127.0.0.1:1/good:v1")
    before = _snapshot(store.root)
    with pytest.raises(UnsafeLayerError, match="leads out of the model root"):
        store.pull(ref, options=options)
    assert _snapshot(store.root) == before
