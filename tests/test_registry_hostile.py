"""A hostile registry on loopback: credentials stay with their registry, and what it writes is
printed harmlessly. 127.0.0.1 plays the registry, 127.0.0.2 "another host"; both log every
request with its headers, so a test can assert what reached whom."""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from harness.distribution import RegistryOptions
from harness.distribution._credentials import Credentials
from harness.distribution._http import Http, registry_error
from harness.distribution._netutil import credentials_may_go
from harness.errors import HarnessError

SECRET = "s3cret-password"
CREDS = Credentials(username="alice", password=SECRET, source="the test")
SCOPE = ("repository:m:pull",)

Handler = Callable[["_Request"], tuple[int, dict[str, str], bytes]]


@dataclass
class _Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Host:
    address: str
    port: int = 0
    seen: list[_Request] = field(default_factory=list)
    routes: dict[str, Handler] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    @property
    def authorizations(self) -> list[str]:
        return [r.headers["authorization"] for r in self.seen if "authorization" in r.headers]


def _serve(host: Host) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            request = _Request(
                self.command, self.path, {k.lower(): v for k, v in self.headers.items()}
            )
            host.seen.append(request)
            route = host.routes.get(self.path.split("?")[0])
            status, headers, body = route(request) if route else (404, {}, b"")
            self.send_response(status)
            for name, value in {"Content-Length": str(len(body)), **headers}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_PUT = do_POST = do_PATCH = do_HEAD = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((host.address, 0), Handler)
    host.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def hosts() -> Iterator[tuple[Host, Host]]:
    registry, other = Host("127.0.0.1"), Host("127.0.0.2")
    servers = [_serve(registry), _serve(other)]
    # the registry: /v2/ answers, so the client settles on plain http (loopback)
    registry.routes["/v2/"] = lambda r: (200, {}, b"{}")
    yield registry, other
    for server in servers:
        server.shutdown()
        server.server_close()


def _http(registry: Host) -> Http:
    return Http(f"127.0.0.1:{registry.port}", RegistryOptions(credentials=CREDS), "m")


def _bearer_challenge(realm: str) -> Handler:
    def answer(request: _Request) -> tuple[int, dict[str, str], bytes]:
        if request.headers.get("authorization") == "Bearer good":
            return 200, {}, b"{}"
        header = f'Bearer realm="{realm}",service="registry"'
        return 401, {"WWW-Authenticate": header}, b""

    return answer


def _token(request: _Request) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json"}, b'{"token": "good"}'


def test_a_token_realm_on_another_host_gets_no_credentials(hosts: tuple[Host, Host]) -> None:
    registry, other = hosts
    other.routes["/token"] = _token
    registry.routes["/v2/m/manifests/latest"] = _bearer_challenge(f"{other.url}/token")
    client = _http(registry)
    response = client.request("GET", "/v2/m/manifests/latest", scope=SCOPE)
    assert response.status == 200  # the anonymous token still works
    assert [r.path.split("?")[0] for r in other.seen] == ["/token"]
    assert other.authorizations == []  # no Basic credentials went there


def test_a_token_realm_on_the_registry_gets_them(hosts: tuple[Host, Host]) -> None:
    registry, _ = hosts
    registry.routes["/token"] = _token
    registry.routes["/v2/m/manifests/latest"] = _bearer_challenge(f"{registry.url}/token")
    client = _http(registry)
    assert client.request("GET", "/v2/m/manifests/latest", scope=SCOPE).status == 200
    token_requests = [r for r in registry.seen if r.path.startswith("/token")]
    assert token_requests[0].headers["authorization"].startswith("Basic ")


def test_a_redirect_to_another_host_that_challenges_gets_no_credentials(
    hosts: tuple[Host, Host],
) -> None:
    registry, other = hosts
    registry.routes["/v2/m/blobs/sha256:ab"] = lambda r: (
        307, {"Location": f"{other.url}/blob"}, b""
    )  # fmt: skip
    other.routes["/token"] = _token
    other.routes["/blob"] = _bearer_challenge(f"{other.url}/token")
    client = _http(registry)
    client.auth._basic = True  # the registry itself took Basic credentials earlier
    with pytest.raises(HarnessError, match="authentication required"):
        client.request("GET", "/v2/m/blobs/sha256:ab", scope=SCOPE)
    assert other.seen and other.authorizations == []
    assert all(SECRET not in str(r.headers) for r in other.seen)


def test_an_upload_location_on_another_host_gets_no_authorization(
    hosts: tuple[Host, Host],
) -> None:
    registry, other = hosts
    other.routes["/upload"] = lambda r: (201, {}, b"")
    client = _http(registry)
    client.auth._basic = True
    response = client.request("PUT", f"{other.url}/upload?digest=sha256:ab", scope=SCOPE)
    assert response.status == 201
    assert [r.method for r in other.seen] == ["PUT"] and other.authorizations == []
    # the registry's own upload URL does carry them
    registry.routes["/v2/m/blobs/uploads/1"] = lambda r: (201, {}, b"")
    client.request("PUT", f"{registry.url}/v2/m/blobs/uploads/1", scope=SCOPE)
    assert registry.authorizations and registry.authorizations[-1].startswith("Basic ")


@pytest.mark.parametrize(
    ("url", "registry", "allowed"),
    [
        ("https://auth.docker.io/token", "https://registry-1.docker.io", True),
        ("https://gitlab.com/jwt/auth", "https://registry.gitlab.com", True),
        ("https://ghcr.io/token", "https://ghcr.io", True),
        ("https://evil.example/token", "https://ghcr.io", False),
        ("http://ghcr.io/token", "https://ghcr.io", False),  # a downgrade
        ("http://127.0.0.1:5000/token", "http://127.0.0.1:5000", True),
        ("http://127.0.0.2:5000/token", "http://127.0.0.1:5000", False),
        ("https://127.0.0.1:9/token", "http://127.0.0.1:5000", True),
        ("ftp://ghcr.io/token", "https://ghcr.io", False),
    ],
)
def test_where_credentials_may_go(url: str, registry: str, allowed: bool) -> None:
    assert credentials_may_go(url, registry) is allowed


def test_a_registry_error_cannot_drive_the_terminal(hosts: tuple[Host, Host]) -> None:
    registry, _ = hosts
    fake = b'{"errors": [{"code": "DENIED", "message": "\\u001b[2J\\u001b[32mall checks passed"}]}'
    registry.routes["/v2/m/manifests/x"] = lambda r: (403, {}, fake)
    client = _http(registry)
    response = client.request("GET", "/v2/m/manifests/x", scope=SCOPE, retry=False)
    error = registry_error("GET", f"{registry.url}/v2/m/manifests/x", response, "m")
    assert "\x1b" not in str(error)
    assert "\\x1b[2J\\x1b[32mall checks passed" in str(error)


def test_a_blob_that_always_answers_a_wrong_range_is_given_up(hosts: tuple[Host, Host]) -> None:
    import hashlib
    import io

    from harness.distribution._download import fetch_blob
    from harness.distribution._options import RetryPolicy
    from harness.oci import Descriptor

    registry, _ = hosts
    data = b"x" * 100
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    registry.routes[f"/v2/m/blobs/{digest}"] = lambda r: (
        206, {"Content-Range": "bytes 50-99/100"}, data[50:]
    )  # fmt: skip
    options = RegistryOptions(credentials=CREDS, retry=RetryPolicy(attempts=3, backoff=0.01))
    client = Http(f"127.0.0.1:{registry.port}", options, "m")
    descriptor = Descriptor("application/octet-stream", digest, len(data))
    with pytest.raises(HarnessError, match=r"answers 206 with Content-Range 'bytes 50-99/100'"):
        fetch_blob(client, "m", descriptor, io.BytesIO(), SCOPE)
    assert len([r for r in registry.seen if "/blobs/" in r.path]) == 3


# -- one blob over several Range streams (harness/distribution/_ranges.py) ---------------------


def _ranged(registry: Host, data: bytes, answer: Handler) -> tuple[Http, object, str]:
    import hashlib

    from harness.distribution._options import RetryPolicy
    from harness.oci import Descriptor

    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    registry.routes[f"/v2/m/blobs/{digest}"] = answer
    options = RegistryOptions(
        credentials=CREDS,
        retry=RetryPolicy(attempts=3, backoff=0.01),
        range_segment=1024,
        range_streams=4,
    )
    client = Http(f"127.0.0.1:{registry.port}", options, "m")
    return client, Descriptor("application/octet-stream", digest, len(data)), digest


def _asked(request: _Request) -> tuple[int, int]:
    first, last = request.headers["range"].removeprefix("bytes=").split("-")
    return int(first), int(last)


def _fetch(client: Http, descriptor: object) -> bytes:
    import io

    from harness.distribution._download import fetch_blob

    out = io.BytesIO()
    fetch_blob(client, "m", descriptor, out, SCOPE)  # type: ignore[arg-type]
    return out.getvalue()


def test_a_registry_that_ignores_range_gives_the_blob_on_one_stream(
    hosts: tuple[Host, Host],
) -> None:
    registry, _ = hosts
    data = bytes(range(256)) * 40  # ten segments
    client, descriptor, _ = _ranged(registry, data, lambda r: (200, {}, data))
    assert _fetch(client, descriptor) == data
    assert len([r for r in registry.seen if "/blobs/" in r.path]) == 1


def test_a_segment_cut_short_asks_again_for_its_rest_only(hosts: tuple[Host, Host]) -> None:
    registry, _ = hosts
    data = os.urandom(10 * 1024)
    cut: list[tuple[int, int]] = []

    def answer(request: _Request) -> tuple[int, dict[str, str], bytes]:
        first, last = _asked(request)
        body = data[first : last + 1]
        if first == 3072 and not cut:  # the fourth segment breaks off half way, once
            cut.append((first, last))
            body = body[:500]
        return 206, {"Content-Range": f"bytes {first}-{first + len(body) - 1}/{len(data)}"}, body

    client, descriptor, _ = _ranged(registry, data, answer)
    assert _fetch(client, descriptor) == data
    asked = [_asked(r) for r in registry.seen if "/blobs/" in r.path]
    assert (3572, 4095) in asked  # the rest of the broken segment, not the whole of it again
    assert len(asked) == 11


@pytest.mark.parametrize(
    ("later", "message"),
    [
        ("wrong-range", r"after answering an earlier range"),
        ("too-long", r"sent more than asked"),
    ],
)
def test_a_registry_that_misanswers_a_later_range_is_refused(
    hosts: tuple[Host, Host], later: str, message: str
) -> None:
    registry, _ = hosts
    data = os.urandom(10 * 1024)

    def answer(request: _Request) -> tuple[int, dict[str, str], bytes]:
        first, last = _asked(request)
        if first == 0:
            return 206, {"Content-Range": f"bytes 0-{last}/{len(data)}"}, data[: last + 1]
        if later == "wrong-range":
            return 206, {"Content-Range": f"bytes 0-1023/{len(data)}"}, data[:1024]
        return 206, {"Content-Range": f"bytes {first}-{last}/{len(data)}"}, data[first : last + 9]

    client, descriptor, _ = _ranged(registry, data, answer)
    with pytest.raises(HarnessError, match=message):
        _fetch(client, descriptor)
    assert len([r for r in registry.seen if "/blobs/" in r.path]) < 20  # no endless asking
