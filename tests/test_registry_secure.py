"""Real registries that want credentials (htpasswd) or speak TLS with a self-signed CA.

Credentials come the ways users have them (docker config, a credential helper, environment
variables); none of them may appear in an error, a result or a log line.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.distribution import (
    AuthError,
    Credentials,
    RegistryError,
    RegistryOptions,
    pull_layout,
    push_layout,
)
from harness.oci import LayerEntry, LayoutWriter
from harness.store import Store
from tests.services import Registry, skopeo

pytestmark = [
    pytest.mark.component("registry"),
    pytest.mark.component("skopeo"),
    pytest.mark.usefixtures("no_user_credentials"),
]


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    with LayoutWriter(tmp_path / "layout") as writer:
        layer = writer.add_layer([LayerEntry("/m.gguf", b"GGUF" + bytes(4096))], "gzip")
        config = {
            "architecture": "amd64",
            "config": {"Cmd": ["-m", "/m.gguf"]},
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        }
        writer.tag(writer.add_image(config, [layer]), "v1")
    return tmp_path / "layout"


def _docker_config(tmp_path: Path, registry: Registry) -> Path:
    folder = tmp_path / "docker-config"
    folder.mkdir()
    auth = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
    (folder / "config.json").write_text(json.dumps({"auths": {registry.host: {"auth": auth}}}))
    return folder


def test_htpasswd_with_docker_config(
    registry_factory: Callable[..., Registry],
    layout: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    registry = registry_factory(auth=True)
    assert registry.password is not None
    ref = f"{registry.host}/secure/basic:v1"
    options = RegistryOptions(insecure=True)
    with pytest.raises(AuthError, match="no credentials found") as anonymous:
        push_layout(layout, ref, options=options)
    monkeypatch.setenv("DOCKER_CONFIG", str(_docker_config(tmp_path, registry)))
    result = push_layout(layout, ref, options=options)
    info = json.loads(skopeo("inspect", *registry.skopeo_args(), f"docker://{ref}"))
    assert info["Digest"] == result.descriptor.digest
    model = Store(tmp_path / "store").pull(ref, options=options)
    assert model.path("/m.gguf").read_bytes().startswith(b"GGUF")
    texts = [caplog.text, str(anonymous.value), repr(result), repr(model)]
    assert not any(registry.password in text for text in texts)


def test_wrong_password_is_refused_without_echoing_it(
    registry_factory: Callable[..., Registry], layout: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    registry = registry_factory(auth=True)
    wrong = "wrong-" + (registry.password or "")
    options = RegistryOptions(insecure=True, credentials=Credentials(registry.username, wrong))
    with pytest.raises(AuthError) as caught:
        push_layout(layout, f"{registry.host}/secure/wrong:v1", options=options)
    assert "refused" in str(caught.value)
    assert wrong not in str(caught.value) and wrong not in caplog.text
    assert wrong not in repr(options)


def test_environment_credentials(
    registry_factory: Callable[..., Registry],
    layout: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = registry_factory(auth=True)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "empty"))
    monkeypatch.setenv("GGUF_HARNESS_REGISTRY_USERNAME", registry.username or "")
    monkeypatch.setenv("GGUF_HARNESS_REGISTRY_PASSWORD", registry.password or "")
    ref = f"{registry.host}/secure/env:v1"
    result = push_layout(layout, ref, options=RegistryOptions(insecure=True))
    back = pull_layout(ref, tmp_path / "back", options=RegistryOptions(insecure=True))
    assert back.manifest.digest == result.descriptor.digest


def test_tls_with_a_self_signed_ca(
    registry_factory: Callable[..., Registry], layout: Path, tmp_path: Path
) -> None:
    registry = registry_factory(tls=True)
    ref = f"{registry.host}/secure/tls:v1"
    with pytest.raises(RegistryError, match=r"TLS certificate not trusted.*--insecure"):
        push_layout(layout, ref)
    result = push_layout(layout, ref, options=RegistryOptions(ca_file=registry.ca))
    info = json.loads(skopeo("inspect", *registry.skopeo_args(), f"docker://{ref}"))
    assert info["Digest"] == result.descriptor.digest
    # --insecure: TLS without verification still works (docker's "insecure registry").
    again = push_layout(layout, ref, options=RegistryOptions(insecure=True))
    assert not again.changed
    model = Store(tmp_path / "store").pull(ref, options=RegistryOptions(ca_file=registry.ca))
    assert model.path("/m.gguf").is_file()


def test_tls_and_htpasswd_with_skopeo_as_the_pusher(
    registry_factory: Callable[..., Registry],
    layout: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = registry_factory(tls=True, auth=True)
    ref = f"{registry.host}/secure/both:v1"
    skopeo("copy", *registry.skopeo_args("dest"), f"oci:{layout}:v1", f"docker://{ref}")
    monkeypatch.setenv("DOCKER_CONFIG", str(_docker_config(tmp_path, registry)))
    options = RegistryOptions(ca_file=registry.ca)
    model = Store(tmp_path / "store").pull(ref, options=options)
    assert model.path("/m.gguf").read_bytes().startswith(b"GGUF")
    result = push_layout(layout, f"{registry.host}/secure/both:v2", options=options)
    assert result.present  # the blobs skopeo pushed to this repository are not sent again
