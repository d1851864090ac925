"""Where credentials come from, in the order a user expects them to win.

1. Credentials the caller passes (a CLI flag).
2. The environment: ``GGUF_HARNESS_REGISTRY_USERNAME`` / ``GGUF_HARNESS_REGISTRY_PASSWORD`` (or
   ``GGUF_HARNESS_REGISTRY_TOKEN`` for a ready bearer token), and ``GITHUB_TOKEN`` for ghcr.io,
   as GitHub Actions provides it.
3. Docker's client config (``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``):
   ``credHelpers`` for the host, then ``credsStore``, then ``auths`` (``auth``, or
   ``username``/``password``, or an ``identitytoken``).

A secret is held in a field that ``repr`` leaves out; nothing here logs or formats one.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import AuthError

__all__ = ["Credentials", "docker_config_path", "find_credentials"]

_HELPER_TIMEOUT = 30
_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class Credentials:
    """A username and secret for one registry; ``source`` says where they came from."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    # docker login's OAuth2 refresh token (config.json "identitytoken").
    identity_token: str | None = field(default=None, repr=False)
    # A bearer token to send as is (no token endpoint involved).
    registry_token: str | None = field(default=None, repr=False)
    source: str = "the caller"

    @property
    def has_basic(self) -> bool:
        return self.username is not None and self.password is not None


def docker_config_path(env: Mapping[str, str] | None = None) -> Path:
    """Docker's client config file: ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``."""
    environ = os.environ if env is None else env
    directory = environ.get("DOCKER_CONFIG")
    if directory:
        return Path(directory) / "config.json"
    return Path(environ.get("HOME") or Path.home()) / ".docker" / "config.json"


def find_credentials(
    registry: str,
    *,
    env: Mapping[str, str] | None = None,
    config_path: Path | None = None,
) -> Credentials | None:
    """The credentials for ``registry`` (``host[:port]``) from the environment or docker config."""
    environ = os.environ if env is None else env
    token = environ.get("GGUF_HARNESS_REGISTRY_TOKEN")
    if token:
        return Credentials(registry_token=token, source="GGUF_HARNESS_REGISTRY_TOKEN")
    user = environ.get("GGUF_HARNESS_REGISTRY_USERNAME")
    password = environ.get("GGUF_HARNESS_REGISTRY_PASSWORD")
    if user and password is not None:
        return Credentials(user, password, source="GGUF_HARNESS_REGISTRY_USERNAME/PASSWORD")
    if registry == "ghcr.io" and environ.get("GITHUB_TOKEN"):
        # ghcr.io's token endpoint takes any user name with a token as the password.
        actor = environ.get("GITHUB_ACTOR") or "x-access-token"
        return Credentials(actor, environ["GITHUB_TOKEN"], source="GITHUB_TOKEN")
    path = config_path or docker_config_path(environ)
    config = _read_config(path)
    if config is None:
        return None
    keys = _HUB_KEYS if registry in ("docker.io", "registry-1.docker.io") else _host_keys(registry)
    helpers = config.get("credHelpers")
    if isinstance(helpers, dict):
        for key in keys:
            helper = helpers.get(key)
            if isinstance(helper, str) and helper:
                return _from_helper(helper, key)
    auths = config.get("auths")
    entry = _auth_entry(auths, keys) if isinstance(auths, dict) else None
    store = config.get("credsStore")
    if isinstance(store, str) and store and not (entry and _has_secret(entry)):
        found = _from_helper(store, keys[0], missing_ok=True)
        if found is not None:
            return found
    if entry is not None:
        return _from_entry(entry, path)
    return None


def _host_keys(registry: str) -> tuple[str, ...]:
    # docker login writes the bare host; older clients wrote a URL.
    return (registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/v1/")


def _read_config(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AuthError(f"cannot read docker config {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AuthError(f"docker config {path} is not valid JSON (line {exc.lineno})") from None
    return data if isinstance(data, dict) else None


def _auth_entry(auths: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any] | None:
    for key in keys:
        entry = auths.get(key)
        if isinstance(entry, dict):
            return entry
    return None


def _has_secret(entry: dict[str, Any]) -> bool:
    return bool(entry.get("auth") or entry.get("password") or entry.get("identitytoken"))


def _from_entry(entry: dict[str, Any], path: Path) -> Credentials | None:
    source = f"docker config {path}"
    identity = entry.get("identitytoken")
    user, password = entry.get("username"), entry.get("password")
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            # Say which file, never what was in it.
            raise AuthError(f"{source}: an 'auth' entry is not base64 of user:password") from None
    if isinstance(identity, str) and identity:
        return Credentials(user if isinstance(user, str) else None, None, identity, source=source)
    if isinstance(user, str) and isinstance(password, str):
        return Credentials(user, password, source=source)
    return None


def _from_helper(helper: str, server: str, *, missing_ok: bool = False) -> Credentials | None:
    program = f"docker-credential-{helper}"
    try:
        done = subprocess.run(
            [program, "get"],
            input=server.encode(),
            capture_output=True,
            timeout=_HELPER_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        if missing_ok:
            return None
        raise AuthError(f"credential helper {program} is not installed") from None
    except subprocess.TimeoutExpired:
        raise AuthError(
            f"credential helper {program} did not answer in {_HELPER_TIMEOUT}s"
        ) from None
    if done.returncode != 0:
        # The helper's output may echo what it was given; report only that it failed.
        if b"credentials not found" in done.stdout.lower() + done.stderr.lower():
            return None
        raise AuthError(f"credential helper {program} failed (exit status {done.returncode})")
    try:
        payload = json.loads(done.stdout)
        user, secret = payload["Username"], payload["Secret"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise AuthError(
            f"credential helper {program} answered something that is not JSON"
        ) from None
    if not isinstance(user, str) or not isinstance(secret, str):
        raise AuthError(f"credential helper {program} answered non-string credentials")
    source = f"credential helper {program}"
    if user == "<token>":  # docker's convention for an identity token
        return Credentials(None, None, secret, source=source)
    return Credentials(user, secret, source=source)
