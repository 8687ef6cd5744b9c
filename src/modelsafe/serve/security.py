"""Who may do what: reads are open; writes and generation need the bearer token when one is set.

A server bound beyond loopback must have a token (:func:`check_bind`).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Sequence
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
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
