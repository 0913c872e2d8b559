"""The guard in front of every route of `serve`, `server` and `ui`, after Jupyter's (jupyter_server's
`check_host`, `check_origin` and its token): a request is refused before any route runs when

1. its Host header is not one of ours (403 `host_not_allowed`): a page on evil.example whose name
   re-resolves to 127.0.0.1 (DNS rebinding) still sends its own Host;
2. it would change state (any method but GET, HEAD, OPTIONS) and comes from another site's page
   (403 `cross_origin`): its `Origin` is not this server's own (`null` included), or its
   `Sec-Fetch-Site` is `cross-site` or `same-site` (another port of the same host is another origin).
   A plain HTML form or a `no-cors` fetch needs no preflight, so the browser sends it whatever we
   answer; these headers are what it cannot forge. Clients that are not browsers (the openai client,
   curl) send neither, and pass;
3. it lacks the API key, `Authorization: Bearer KEY` (401), on any path but the open ones (`/health`,
   the page's own files). `server` and `ui` make a random key per start when none is given, as
   Jupyter makes its token, so no default is keyless.

JSON routes refuse a body that is not `application/json` (415) where they read it (bodies.py).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from .errors import RequestError

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
OPEN_PATHS = ("/health",)  # liveness checks need no key (they reveal nothing but "up")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
"""Methods that change nothing: a foreign page's GET cannot read our answer (we send no CORS headers)."""
FOREIGN_FETCH_SITES = ("cross-site", "same-site")
"""`Sec-Fetch-Site` values of a request another origin's page made (`same-origin` and `none`, typed or
opened by the user, are ours)."""
KEY_BYTES = 24
"""Random bytes of a key made per start (48 hex digits, as Jupyter's token)."""


def new_key() -> str:
    """An API key for one start of a server that was given none."""
    return secrets.token_hex(KEY_BYTES)


class Guard:
    """ASGI middleware: Host allow-list (403), same-origin state changes (403) and the API key (401)
    before any route runs; `open_paths` need no key."""

    def __init__(self, app: Any, api_key: str | None, allowed_hosts: Iterable[str],
                 open_paths: Iterable[str] = OPEN_PATHS) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.allowed_hosts = {h.lower().strip("[]") for h in allowed_hosts}
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            error = self.refusal(scope.get("method", "GET"), scope["path"], headers)
            if error is not None:
                await error.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, method: str, path: str, headers: dict[str, str]) -> RequestError | None:
        """Why a request with these (lower-cased) headers is refused before its route, or None."""
        host = headers.get("host", "")
        if host_name(host) not in self.allowed_hosts:
            return RequestError(403, f"Host '{host}' is not allowed; start the server with --allowed-host NAME to "
                                     "accept it", code="host_not_allowed")
        if method.upper() not in SAFE_METHODS and not same_origin(headers):
            origin = headers.get("origin") or f"Sec-Fetch-Site: {headers.get('sec-fetch-site')}"
            return RequestError(403, f"a request from another site's page ({origin}) may not change anything "
                                     f"here; only this server's own page ({host}) may", code="cross_origin")
        if self.api_key is not None and path not in self.open_paths and not self._key_ok(headers):
            return RequestError(401, "Incorrect API key provided: send 'Authorization: Bearer KEY'",
                                code="invalid_api_key")
        return None

    def _key_ok(self, headers: dict[str, str]) -> bool:
        given = headers.get("authorization", "")
        token = given[7:].strip() if given[:7].lower() == "bearer " else ""
        assert self.api_key is not None
        return hmac.compare_digest(token.encode(), self.api_key)


def same_origin(headers: dict[str, str]) -> bool:
    """Whether a request is this server's own page's or no page's: its Origin, when sent, names the
    host it was sent to (as jupyter_server's check_origin compares them), and its Sec-Fetch-Site,
    when sent, is not another site's. No Origin at all: not a browser's page (the openai client)."""
    if headers.get("sec-fetch-site", "").lower() in FOREIGN_FETCH_SITES:
        return False
    origin = headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin.strip().lower()).netloc == headers.get("host", "").strip().lower() != ""


def host_name(host: str) -> str:
    """The name part of a Host header, lower-cased: 'LocalHost:8000' -> 'localhost', '[::1]:80' -> '::1'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
