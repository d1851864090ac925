"""References, credential discovery and the challenge flows, without a registry.

Credentials come from a throwaway docker config, a fake credential helper on PATH and the
environment; every test checks the secret never shows in an error or a repr.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from harness.distribution import (
    AuthError,
    Credentials,
    Reference,
    RegistryError,
    find_credentials,
    redact,
)
from harness.distribution._token import Authenticator, TokenResponse

SECRET = "hunter2-do-not-print"


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("127.0.0.1:5000/smollm2:q4_1", "127.0.0.1:5000", "smollm2", "q4_1", None),
        ("127.0.0.1:5000/org/model", "127.0.0.1:5000", "org/model", "latest", None),
        ("ghcr.io/org/m@sha256:" + "a" * 64, "ghcr.io", "org/m", None, "sha256:" + "a" * 64),
        ("smollm2", "docker.io", "library/smollm2", "latest", None),
        ("localhost/x:1", "localhost", "x", "1", None),
        (
            "user/model:0.5b-instruct-q4-k-m",
            "docker.io",
            "user/model",
            "0.5b-instruct-q4-k-m",
            None,
        ),
    ],
)
def test_reference_parse(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        registry,
        repository,
        tag,
        digest,
    )
    assert Reference.parse(str(ref)) == ref


@pytest.mark.parametrize(
    "text",
    ["", "Upper/Case", "127.0.0.1:5000/x:bad tag", "x@sha256:short", "a//b", "x:" + "t" * 129],
)
def test_reference_refuses(text: str) -> None:
    with pytest.raises(RegistryError):
        Reference.parse(text)


def test_reference_with_credentials_is_redacted_in_errors() -> None:
    with pytest.raises(RegistryError) as caught:
        Reference.parse(f"user:{SECRET}@127.0.0.1:5000/x")
    assert SECRET not in str(caught.value)
    assert redact(f"https://user:{SECRET}@host/v2/x?_state=abc") == "https://***@host/v2/x"


def _config(tmp_path: Path, document: dict[str, object]) -> Path:
    path = tmp_path / "docker" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def test_docker_config_auths(tmp_path: Path) -> None:
    auth = base64.b64encode(f"alice:{SECRET}".encode()).decode()
    path = _config(tmp_path, {"auths": {"127.0.0.1:5000": {"auth": auth}}})
    found = find_credentials("127.0.0.1:5000", env={"DOCKER_CONFIG": str(path.parent)})
    assert found is not None
    assert (found.username, found.password) == ("alice", SECRET)
    assert SECRET not in repr(found)
    assert find_credentials("127.0.0.1:6000", env={"DOCKER_CONFIG": str(path.parent)}) is None


def test_docker_config_identity_token_and_url_keys(tmp_path: Path) -> None:
    path = _config(tmp_path, {"auths": {"https://reg.example": {"identitytoken": SECRET}}})
    found = find_credentials("reg.example", env={"DOCKER_CONFIG": str(path.parent)})
    assert found is not None and found.identity_token == SECRET and found.password is None


def test_malformed_auth_entry_names_the_file_not_the_content(tmp_path: Path) -> None:
    path = _config(tmp_path, {"auths": {"h:1": {"auth": SECRET + "!!"}}})
    with pytest.raises(AuthError) as caught:
        find_credentials("h:1", env={"DOCKER_CONFIG": str(path.parent)})
    assert str(path) in str(caught.value) and SECRET not in str(caught.value)


def _helper(tmp_path: Path, name: str, body: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}


def test_credential_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = _helper(
        tmp_path,
        "fake",
        'read server; printf \'{"ServerURL":"%s","Username":"bob","Secret":"'
        + SECRET
        + '"}\' "$server"',
    )
    monkeypatch.setenv("PATH", env["PATH"])
    path = _config(tmp_path, {"credHelpers": {"127.0.0.1:5000": "fake"}})
    found = find_credentials("127.0.0.1:5000", env={"DOCKER_CONFIG": str(path.parent)})
    assert found is not None and (found.username, found.password) == ("bob", SECRET)
    assert "docker-credential-fake" in found.source


def test_failing_credential_helper_does_not_echo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _helper(tmp_path, "broken", f"echo 'token {SECRET} rejected' >&2; exit 3")
    monkeypatch.setenv("PATH", env["PATH"])
    path = _config(tmp_path, {"credsStore": "broken"})
    with pytest.raises(AuthError) as caught:
        find_credentials("127.0.0.1:5000", env={"DOCKER_CONFIG": str(path.parent)})
    assert SECRET not in str(caught.value) and "exit status 3" in str(caught.value)


def test_environment_tokens() -> None:
    github = find_credentials("ghcr.io", env={"GITHUB_TOKEN": SECRET, "GITHUB_ACTOR": "octo"})
    assert github == Credentials("octo", SECRET, source="GITHUB_TOKEN")
    assert find_credentials("quay.io", env={"GITHUB_TOKEN": SECRET, "HOME": "/nonexistent"}) is None
    plain = find_credentials(
        "x:1",
        env={"GGUF_HARNESS_REGISTRY_USERNAME": "u", "GGUF_HARNESS_REGISTRY_PASSWORD": SECRET},
    )
    assert plain is not None and plain.password == SECRET
    bearer = find_credentials("x:1", env={"GGUF_HARNESS_REGISTRY_TOKEN": SECRET})
    assert bearer is not None and bearer.registry_token == SECRET
    assert SECRET not in repr(bearer)


class _TokenServer:
    def __init__(self, status: int = 200, token: str = "tok-1") -> None:
        self.status = status
        self.token = token
        self.calls: list[tuple[str, str, dict[str, str], bytes | None]] = []

    def __call__(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None
    ) -> TokenResponse:
        self.calls.append((method, url, headers, body))
        return TokenResponse(self.status, json.dumps({"token": self.token}).encode())


def test_bearer_flow_with_basic_credentials() -> None:
    server = _TokenServer()
    auth = Authenticator(Credentials("u", SECRET), server)
    scope = ("repository:a/b:pull,push",)
    assert auth.header(scope) is None
    challenge = 'Bearer realm="http://127.0.0.1:9/token",service="reg",scope="repository:a/b:pull"'
    assert auth.challenge(challenge, scope, None)
    assert auth.header(scope) == "Bearer tok-1"
    method, url, headers, _ = server.calls[0]
    assert method == "GET" and "service=reg" in url and "scope=repository%3Aa%2Fb%3Apull" in url
    assert headers["Authorization"].startswith("Basic ")
    # The same token refused again: nothing more to try.
    assert not auth.challenge(challenge, scope, "Bearer tok-1")


def test_bearer_flow_with_identity_token_posts_a_refresh_grant() -> None:
    server = _TokenServer()
    auth = Authenticator(Credentials(identity_token=SECRET), server)
    assert auth.challenge('Bearer realm="http://127.0.0.1:9/t",service="s"', ("x",), None)
    method, _url, headers, body = server.calls[0]
    assert method == "POST" and body is not None and b"grant_type=refresh_token" in body
    assert "Authorization" not in headers


def test_refused_token_request_names_the_source_only() -> None:
    auth = Authenticator(Credentials("u", SECRET, source="docker config"), _TokenServer(401))
    with pytest.raises(AuthError) as caught:
        auth.challenge('Bearer realm="http://127.0.0.1:9/t"', ("x",), None)
    assert "docker config" in str(caught.value) and SECRET not in str(caught.value)


def test_basic_challenge() -> None:
    auth = Authenticator(Credentials("u", SECRET), _TokenServer())
    assert auth.challenge('Basic realm="r"', ("x",), None)
    header = auth.header(("x",))
    assert header is not None and base64.b64decode(header[6:]) == f"u:{SECRET}".encode()
    assert not auth.challenge('Basic realm="r"', ("x",), header)  # refused: stop
    assert not Authenticator(None, _TokenServer()).challenge('Basic realm="r"', ("x",), None)
