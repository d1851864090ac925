"""HTTP to one registry: TLS as configured, credentials on challenge, retries with backoff.

urllib3 directly (typed, already a dependency of requests and oras): a connection pool, bodies
streamed from files, no environment proxies (a registry on loopback must stay on loopback),
no automatic retries or redirects (both are decided here, where the request's meaning is known).
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import urllib3
from urllib3.exceptions import HTTPError, SSLError

from harness.errors import AuthError, NotFoundError, RegistryError, printable

from ._credentials import Credentials, find_credentials
from ._netutil import (
    credentials_may_go,
    loopback,
    quiet,
    reason,
    retry_after,
    ssl_context,
    untrusted,
    url_path,
)
from ._options import RegistryOptions
from ._token import Authenticator, Scope, TokenResponse

__all__ = ["Body", "Http", "Response", "registry_error"]

_TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})
_MAX_ERROR_BODY = 64 << 10
_MAX_REDIRECTS = 5

Response = urllib3.BaseHTTPResponse


@dataclass(frozen=True)
class Body:
    """A request body that can be sent again: ``open`` returns a fresh iterator each time."""

    length: int
    open: Callable[[], Iterable[bytes]]

    @classmethod
    def of(cls, data: bytes) -> Body:
        return cls(len(data), lambda: [data])


class Http:
    """Requests to ``host``; the scheme is found on first use (https, or http when insecure)."""

    def __init__(self, host: str, options: RegistryOptions, where: str) -> None:
        self.host = host
        self.options = options
        self.where = where  # the reference named in errors
        self._pool = urllib3.PoolManager(
            num_pools=4,
            # Every blob at once, each over its Range streams, with connections to spare: a
            # full pool would discard connections with a warning on stderr.
            maxsize=max(8, options.transfers * options.range_streams + 2),
            ssl_context=ssl_context(host, options),
            timeout=urllib3.Timeout(connect=options.connect_timeout, read=options.read_timeout),
            retries=False,
            headers={"User-Agent": options.user_agent},
        )
        credentials: Credentials | None = options.credentials
        if credentials is None:
            credentials = find_credentials(host)
        self.auth = Authenticator(credentials, self._token_fetch, self._trusted)
        self._base: str | None = None

    def close(self) -> None:
        self._pool.clear()

    @property
    def base(self) -> str:
        if self._base is None:
            self._base = self._probe()
        return self._base

    def url(self, path: str) -> str:
        return path if "://" in path else self.base + path

    def request(
        self,
        method: str,
        path: str,
        *,
        scope: Scope,
        headers: Mapping[str, str] | None = None,
        body: Body | None = None,
        stream: bool = False,
        retry: bool = True,
    ) -> Response:
        """Send; answer 401 challenges; retry transient failures (when ``retry``).

        The caller judges the status. With ``stream`` the body is left unread for the caller.
        """
        url = self.url(path)
        policy = self.options.retry
        attempt = 0
        challenged = False
        # A URL the registry sent us elsewhere (an upload Location) is followed without its
        # credentials.
        ours = self._trusted(url)
        while True:
            sent = self.auth.header(scope) if ours else None
            all_headers = dict(headers or {})
            if sent is not None:
                all_headers["Authorization"] = sent
            try:
                response = self._send(method, url, all_headers, body, stream)
            except HTTPError as exc:
                if isinstance(exc, SSLError) or not retry or attempt + 1 >= policy.attempts:
                    raise self._failure(method, url, exc, attempt + 1) from None
                time.sleep(policy.wait(attempt))
                attempt += 1
                continue
            if response.status == 401 and not challenged:
                challenged = True
                challenge = response.headers.get("WWW-Authenticate")
                _drain(response)
                if self.auth.challenge(challenge, scope, sent):
                    continue
                raise self._auth_failure(method, url, 401)
            if response.status == 401:
                _drain(response)
                raise self._auth_failure(method, url, 401)
            if response.status in _TRANSIENT and retry and attempt + 1 < policy.attempts:
                wait = policy.wait(attempt, retry_after(response))
                _drain(response)
                time.sleep(wait)
                attempt += 1
                continue
            return response

    def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: Body | None,
        stream: bool,
    ) -> Response:
        payload: Iterable[bytes] | None = None
        if body is not None:
            headers["Content-Length"] = str(body.length)
            payload = body.open()
        elif method in ("PUT", "POST", "PATCH"):
            headers["Content-Length"] = "0"
        for _ in range(_MAX_REDIRECTS):
            with quiet(self.options.insecure):
                response = self._pool.urlopen(
                    method,
                    url,
                    body=payload,
                    headers=headers,
                    preload_content=not stream,
                    decode_content=False,
                    redirect=False,
                    retries=False,
                )
            location = response.headers.get("Location")
            if response.status not in (301, 302, 303, 307, 308) or not location or method != "GET":
                return response
            # Blob storage redirects (S3, CDNs): follow, without our Authorization when the host
            # or the scheme changes, since the credentials are the registry's and nobody else's.
            _drain(response)
            target = urllib.parse.urljoin(url, location)
            before, after = urllib.parse.urlsplit(url), urllib.parse.urlsplit(target)
            if (before.scheme, before.netloc) != (after.scheme, after.netloc):
                headers.pop("Authorization", None)
            url = target
        raise RegistryError(f"{method} {url_path(url)}: too many redirects", self.where)

    def _trusted(self, url: str) -> bool:
        return credentials_may_go(url, self.base)

    def _probe(self) -> str:
        """https; plain http too for an insecure registry, or one on loopback (as docker treats
        127.0.0.0/8) that does not speak TLS. Transient failures are retried."""
        plain_ok = self.options.insecure or loopback(self.host)
        schemes: tuple[str, ...] = ("https", "http") if plain_ok else ("https",)
        policy = self.options.retry
        last: Exception | None = None
        for scheme in schemes:
            url = f"{scheme}://{self.host}/v2/"
            for attempt in range(policy.attempts):
                try:
                    with quiet(self.options.insecure):
                        response = self._pool.urlopen(
                            "GET", url, preload_content=True, redirect=False, retries=False
                        )
                except SSLError as exc:
                    last = exc
                    if untrusted(exc):
                        schemes = ()  # a TLS server we may not trust: never downgrade to http
                    break
                except HTTPError as exc:
                    if attempt + 1 >= policy.attempts:
                        raise self._failure("GET", url, exc, attempt + 1) from None
                    time.sleep(policy.wait(attempt))
                    continue
                if response.status in (200, 401):
                    return f"{scheme}://{self.host}"
                if response.status not in _TRANSIENT or attempt + 1 >= policy.attempts:
                    raise registry_error("GET", url, response, self.where)
                time.sleep(policy.wait(attempt, retry_after(response)))
            if not schemes:
                break
        assert last is not None
        hint = "" if self.options.insecure else " (--insecure for self-signed or plain HTTP)"
        raise self._failure("GET", f"https://{self.host}/v2/", last, 1, hint)

    def _token_fetch(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None
    ) -> TokenResponse:
        try:
            with quiet(self.options.insecure):
                response = self._pool.urlopen(
                    method, url, body=body, headers=headers, redirect=False, retries=False
                )
        except HTTPError as exc:
            raise self._failure(method, url, exc, 1) from None
        return TokenResponse(response.status, response.data[:_MAX_ERROR_BODY])

    def _failure(
        self, method: str, url: str, exc: BaseException, attempts: int, hint: str = ""
    ) -> RegistryError:
        why = reason(exc)
        tries = f" (after {attempts} attempts)" if attempts > 1 else ""
        return RegistryError(f"{method} {url_path(url)}: {why}{tries}{hint}", self.where)

    def _auth_failure(self, method: str, url: str, status: int) -> AuthError:
        source = self.auth.source
        why = f"credentials from {source} were refused" if source else "no credentials found"
        return AuthError(
            f"{method} {url_path(url)}: authentication required, {why} (HTTP {status}; docker "
            "login, a credential helper, or GGUF_HARNESS_REGISTRY_USERNAME/PASSWORD)",
            self.where,
            status=status,
        )


def registry_error(method: str, url: str, response: Response, where: str) -> RegistryError:
    """An error for an unexpected answer, with the registry's own error codes when it sent any."""
    code, text = None, ""
    with contextlib.suppress(Exception):
        data = response.read(_MAX_ERROR_BODY) if not response.data else response.data
        errors = json.loads(data).get("errors") or []
        if errors and isinstance(errors[0], dict):
            code = str(errors[0].get("code") or "") or None
            text = printable(
                "; ".join(
                    f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict)
                )
            )
    _drain(response)
    message = f"{method} {url_path(url)}: HTTP {response.status}" + (f" {text}" if text else "")
    if response.status == 404:
        return NotFoundError(message, where, status=404, code=code)
    if response.status in (401, 403):
        return AuthError(message, where, status=response.status, code=code)
    return RegistryError(message, where, status=response.status, code=code)


def _drain(response: Response) -> None:
    with contextlib.suppress(Exception):
        response.drain_conn()
    response.release_conn()
