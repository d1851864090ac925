"""Small pieces of the HTTP layer: TLS contexts, loopback detection, and error text that never
carries a URL's query or userinfo."""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import ipaddress
import ssl
import time
import urllib.parse
import warnings
from collections.abc import Iterator
from pathlib import Path

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    IncompleteRead,
    InsecureRequestWarning,
    NewConnectionError,
    ReadTimeoutError,
)

from harness.errors import RegistryError

from ._options import RegistryOptions

__all__ = [
    "credentials_may_go",
    "loopback",
    "quiet",
    "reason",
    "retry_after",
    "ssl_context",
    "untrusted",
    "url_path",
]

_CERT_DIRS = ("/etc/docker/certs.d", "/etc/containers/certs.d")


def loopback(host: str) -> bool:
    name = urllib.parse.urlsplit(f"//{host}").hostname or ""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def credentials_may_go(url: str, registry: str) -> bool:
    """Whether the credentials of the registry at ``registry`` (scheme://host[:port]) may be sent
    to ``url``: the registry itself, or a host of the same registered domain (Docker Hub's
    auth.docker.io for registry-1.docker.io, GitLab's gitlab.com for registry.gitlab.com); never
    to an IP address that is not the registry's, and never over plain HTTP unless the registry
    itself speaks it on that very host (an https -> http downgrade drops them)."""
    target, home = urllib.parse.urlsplit(url), urllib.parse.urlsplit(registry)
    target_host, home_host = (target.hostname or "").lower(), (home.hostname or "").lower()
    if target.scheme == "http" and not (home.scheme == "http" and target_host == home_host):
        return False
    if target.scheme not in ("http", "https"):
        return False
    if target_host == home_host:
        return True
    if _is_ip(target_host) or _is_ip(home_host):
        return False
    return _domain(target_host) == _domain(home_host)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _domain(host: str) -> str:
    # The last two labels: imprecise for public suffixes such as co.uk, where it is stricter
    # than needed only if the registry's own name has fewer labels than its suffix.
    labels = host.split(".")
    return ".".join(labels[-2:]) if len(labels) >= 2 else host


def untrusted(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        nested = [a for a in seen.args if isinstance(a, BaseException)]
        seen = seen.__cause__ or (nested[0] if nested else None) or seen.__context__
    return False


def ssl_context(host: str, options: RegistryOptions) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if options.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    cafiles = [options.ca_file] if options.ca_file else []
    for directory in _CERT_DIRS:
        folder = Path(directory) / host
        with contextlib.suppress(OSError):
            cafiles += sorted(folder.glob("*.crt"))
    for cafile in cafiles:
        try:
            context.load_verify_locations(cafile=str(cafile))
        except (OSError, ssl.SSLError) as exc:
            raise RegistryError(f"cannot load CA certificate {cafile}: {exc}") from None
    return context


@contextlib.contextmanager
def quiet(insecure: bool) -> Iterator[None]:
    """Without verification urllib3 warns on every request; the user asked for it once."""
    if not insecure:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureRequestWarning)
        yield


def retry_after(response: urllib3.BaseHTTPResponse) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if value else None
        return None if when is None else max(0.0, when.timestamp() - time.time())


def url_path(url: str) -> str:
    """The URL without its query (upload state tokens) and without any userinfo."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def reason(exc: BaseException) -> str:
    """A short reason from a urllib3 error, found by walking its causes to the socket error.

    urllib3's own messages embed connection object reprs and URLs; none of them is shown.
    """
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, ConnectionResetError | BrokenPipeError):
            return "connection reset"
        if isinstance(seen, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted ({seen.verify_message})"
        if isinstance(seen, ssl.SSLError):
            return f"TLS handshake failed ({seen.reason or 'SSL error'})"
        if isinstance(seen, TimeoutError | ReadTimeoutError) or (
            isinstance(seen, ConnectTimeoutError) and not isinstance(seen, NewConnectionError)
        ):
            return "timed out"
        if isinstance(seen, IncompleteRead | http.client.IncompleteRead):
            return "connection closed in the middle of a response"
        nested = [a for a in seen.args if isinstance(a, BaseException)]
        seen = seen.__cause__ or (nested[0] if nested else None) or seen.__context__
    return type(exc).__name__
