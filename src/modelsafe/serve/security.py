"""Who may do what: reads are open; writes and generation need the bearer token when one is set.

A server bound beyond loopback must have a token (:func:`check_bind`).
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Sequence
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from modelsafe.errors import ModelsafeError, UsageError

TOKEN_ENV = "MODELSAFE_API_TOKEN"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


class AuthError(ModelsafeError):
    """A write or generate request without the right bearer token (HTTP 401)."""

    exit_code = 2


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond loopback without a token."""
    if not is_loopback(host) and not token:
        raise UsageError(
            f"refusing to listen on {host} without an API token: anyone who can reach it could "
            "submit generation jobs",
            hint=f"pass --token T (or set {TOKEN_ENV}), or bind to 127.0.0.1",
        )


def host_name(header: str) -> str:
    """The name part of a Host header: ``[::1]:8765`` -> ``::1``, ``a.b:80`` -> ``a.b``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostCheckMiddleware:
    """Answer 400 (JSON) to a request whose Host is not one of ``allowed``: a server on loopback
    must not be reachable from a web page through a DNS name rebound to 127.0.0.1."""

    def __init__(self, app: ASGIApp, allowed: Sequence[str]) -> None:
        self.app = app
        self.allowed = {host_name(a) for a in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = Headers(scope=scope).get("host", "")
            if host_name(host) not in self.allowed:
                response = JSONResponse(
                    {
                        "error": f"this server does not answer to the host name {host!r}",
                        "hint": "use http://127.0.0.1:PORT/ or http://localhost:PORT/",
                    },
                    status_code=400,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


MAX_BODY = 1 << 20  # bytes: a job spec or a set is a few KB; 1 MiB leaves room for long prompts
# Routes that need the token: checked before their body is read (an unauthenticated client must
# not make the server parse megabytes). (method, path pattern)
TOKEN_ROUTES = (("POST", r"/api/jobs"), ("POST", r"/api/jobs/[^/]+/cancel"))


def is_token_route(method: str, path: str) -> bool:
    """True for the write routes (submit, cancel): they need the token when one is set, and a
    browser may only call them from a page of this server."""
    return any(
        method == m and re.fullmatch(pattern, path) is not None for m, pattern in TOKEN_ROUTES
    )


def cross_site(headers: Headers) -> str | None:
    """Why a browser request comes from another site (None when it does not): its ``Origin``
    names another host than its ``Host``, or ``Sec-Fetch-Site`` says ``cross-site``. Clients
    that are not browsers send neither header and are not affected."""
    if headers.get("sec-fetch-site", "").strip().lower() == "cross-site":
        return "a cross-site request (Sec-Fetch-Site)"
    origin = headers.get("origin")
    if origin is None:
        return None
    netloc = urlsplit(origin.strip()).netloc.lower() if "://" in origin else ""
    if not netloc or netloc != headers.get("host", "").strip().lower():
        return f"a request from the page of another site (Origin {origin[:100]!r})"
    return None


class BodyGuardMiddleware:
    """413 (JSON) for a request body over ``MAX_BODY`` (by Content-Length, or counted as it
    arrives); for a token route, 403 before anything else when a browser sends it from another
    site (a form on any web page could otherwise post to a loopback server that has no token),
    and 401 before any body is read without the right token."""

    def __init__(self, app: ASGIApp, token: str | None, limit: int = MAX_BODY) -> None:
        self.app = app
        self.token = token
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        path = str(scope.get("path", ""))
        root = str(scope.get("root_path", "")).rstrip("/")
        if root and path.startswith(root + "/"):
            path = path[len(root) :]
        if is_token_route(str(scope.get("method", "")), path.rstrip("/")):
            foreign = cross_site(headers)
            if foreign is not None:
                hint = "call the API from a script or curl, or from this server's own pages"
                await _json(403, f"refused: {foreign}", hint)(scope, receive, send)
                return
            if self.token and not _token_matches(headers, self.token):
                await _json(401, "this endpoint needs the API token", _TOKEN_HINT)(
                    scope, receive, send
                )
                return
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _too_big(self.limit)(scope, receive, send)
            return
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge(self.limit)
            return message

        try:
            await self.app(scope, counted, send)
        except _BodyTooLarge:
            await _too_big(self.limit)(scope, receive, send)


class _BodyTooLarge(HTTPException):
    """Raised from the body reader: FastAPI passes an HTTPException on (anything else it turns
    into a 400 "error parsing the body"), and the app's handler answers it as JSON."""

    def __init__(self, limit: int = MAX_BODY) -> None:
        super().__init__(413, f"the request body is larger than {limit:,} bytes")


_TOKEN_HINT = "send the header `Authorization: Bearer <token>` (the server's --token)"


def _json(status: int, error: str, hint: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": error, "hint": hint}, status_code=status, headers=headers)


def _too_big(limit: int) -> JSONResponse:
    return _json(413, f"the request body is larger than {limit:,} bytes", "send a smaller body")


def _token_matches(headers: Headers, token: str) -> bool:
    scheme, _, given = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


_bearer = HTTPBearer(auto_error=False, description="The server's --token (MODELSAFE_API_TOKEN)")


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
) -> None:
    """FastAPI dependency of every write/generate endpoint: 401 unless the token matches."""
    token: str | None = request.app.state.token
    if not token:
        return
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise AuthError(
            "this endpoint needs the API token",
            hint="send the header `Authorization: Bearer <token>` (the server's --token)",
        )
