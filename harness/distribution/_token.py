"""Answering a registry's ``WWW-Authenticate`` challenge: Basic, or the Bearer token flow.

The token flow is the distribution spec's (docker's): GET the realm with ``service`` and each
``scope``, with Basic credentials when we have them (anonymous otherwise); with a docker login
identity token, POST an OAuth2 refresh-token grant instead. Tokens are cached per scope until
shortly before they expire. Nothing here logs or formats a secret.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from oras.auth.utils import get_basic_auth, parse_auth_header  # type: ignore[import-untyped]

from harness.errors import AuthError

from ._credentials import Credentials

__all__ = ["Authenticator", "Scope", "TokenResponse"]

Scope = tuple[str, ...]  # e.g. ("repository:models/x:pull,push", "repository:models/y:pull")
_DEFAULT_EXPIRY = 60.0
_MARGIN = 10.0


@dataclass(frozen=True)
class TokenResponse:
    status: int
    body: bytes


# (method, url, headers, form body) -> status and body: the transport's, so the token request
# gets the same TLS settings and the same loopback-only connection pool.
Fetch = Callable[[str, str, dict[str, str], bytes | None], TokenResponse]


class Authenticator:
    """The Authorization header to send for a scope, learnt from the registry's challenges."""

    def __init__(
        self,
        credentials: Credentials | None,
        fetch: Fetch,
        trusted: Callable[[str], bool] = lambda url: True,
    ) -> None:
        self._credentials = credentials
        self._fetch = fetch
        # whether the registry's credentials may go to this URL (a token realm)
        self._trusted = trusted
        self._lock = threading.Lock()
        self._basic = False
        self._tokens: dict[str, tuple[str, float]] = {}

    @property
    def source(self) -> str | None:
        return self._credentials.source if self._credentials else None

    def header(self, scope: Scope) -> str | None:
        creds = self._credentials
        if creds is not None and creds.registry_token:
            return f"Bearer {creds.registry_token}"
        with self._lock:
            if self._basic and creds is not None and creds.has_basic:
                return f"Basic {_basic(creds)}"
            now = time.monotonic()
            found = self._tokens.get(_key(scope))
            if found and found[1] > now:
                return f"Bearer {found[0]}"
            # A token for "pull,push" also serves a "pull": fewer round trips to the realm.
            for key, (token, expiry) in self._tokens.items():
                if expiry > now and all(_covered(want, key.split(" ")) for want in scope):
                    return f"Bearer {token}"
        return None

    def challenge(self, header: str | None, scope: Scope, sent: str | None) -> bool:
        """Handle a 401; True if a retry may succeed, False if we have nothing more to try.

        ``sent`` is the Authorization we sent: the same answer twice means it was refused.
        """
        if not header:
            return False
        scheme = header.strip().split(" ", 1)[0].lower()
        creds = self._credentials
        if scheme == "basic":
            if creds is None or not creds.has_basic or (sent or "").startswith("Basic "):
                return False
            with self._lock:
                self._basic = True
            return True
        if scheme != "bearer" or (creds is not None and creds.registry_token):
            return False
        params = parse_auth_header(header)
        if not params.realm:
            return False
        scopes = list(scope)
        if params.scope and params.scope not in scopes:
            scopes.extend(params.scope.split(" "))
        token, expires = self._request_token(params.realm, params.service, scopes)
        value = f"Bearer {token}"
        if value == sent:
            return False
        with self._lock:
            self._tokens[_key(scope)] = (token, time.monotonic() + expires)
        return True

    def _request_token(
        self, realm: str, service: str | None, scopes: Sequence[str]
    ) -> tuple[str, float]:
        # A realm elsewhere gets an anonymous token request: the credentials are the registry's.
        creds = self._credentials if self._trusted(realm) else None
        query: list[tuple[str, str]] = []
        if service:
            query.append(("service", service))
        headers = {"Accept": "application/json"}
        if creds is not None and creds.identity_token:
            form = [("grant_type", "refresh_token"), ("refresh_token", creds.identity_token)]
            form += [("client_id", "gguf-harness"), *query]
            form += [("scope", s) for s in scopes]
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            body = urllib.parse.urlencode(form).encode()
            answer = self._fetch("POST", realm, headers, body)
        else:
            query += [("scope", s) for s in scopes]
            if creds is not None and creds.has_basic:
                headers["Authorization"] = f"Basic {_basic(creds)}"
            separator = "&" if "?" in realm else "?"
            url = realm + (separator + urllib.parse.urlencode(query) if query else "")
            answer = self._fetch("GET", url, headers, None)
        where = urllib.parse.urlsplit(realm)
        realm_name = f"{where.scheme}://{where.netloc}{where.path}"
        if answer.status in (401, 403):
            raise AuthError(
                f"the token service {realm_name} refused "
                + (f"the credentials from {creds.source}" if creds else "anonymous access")
                + f" (HTTP {answer.status})",
                status=answer.status,
            )
        if answer.status != 200:
            raise AuthError(f"the token service {realm_name} answered HTTP {answer.status}")
        try:
            data = json.loads(answer.body)
            token = data.get("token") or data.get("access_token")
            expires = float(data.get("expires_in") or _DEFAULT_EXPIRY)
        except (ValueError, AttributeError, TypeError):
            raise AuthError(f"the token service {realm_name} answered something not JSON") from None
        if not isinstance(token, str) or not token:
            raise AuthError(f"the token service {realm_name} answered no token")
        return token, max(expires - _MARGIN, 1.0)


def _basic(creds: Credentials) -> str:
    return str(get_basic_auth(creds.username, creds.password))


def _covered(want: str, have: list[str]) -> bool:
    kind, _, rest = want.partition(":")
    name, _, actions = rest.rpartition(":")
    for granted in have:
        g_kind, _, g_rest = granted.partition(":")
        g_name, _, g_actions = g_rest.rpartition(":")
        same = (g_kind, g_name) == (kind, name)
        if same and set(actions.split(",")) <= set(g_actions.split(",")):
            return True
    return False


def _key(scope: Scope) -> str:
    return " ".join(sorted(scope))
