"""Who may ask a `kb serve`.

With a token (`KB_SERVE_TOKEN`), every request must carry it, health checks included: `Authorization: Bearer
<token>`, or HTTP Basic with the token as the password (any user name), which lets a browser open the search
page: it asks once, then sends it with the page's own requests. Tokens never travel in URLs, so they never
reach access logs or browser history; they are compared in constant time.

Without a token, kb serve listens on loopback only (`check_exposure`) and answers only requests addressed to
this machine (the Host header) and, when a browser says which page sent them, sent by a page of this machine
(the Origin header): a web page elsewhere cannot read the knowledge base by DNS rebinding.
"""

import base64
import binascii
import ipaddress
import secrets
from urllib.parse import urlsplit

from pydantic import SecretStr
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from kb.errors import ConfigError

_TOKEN_NEEDED = "this kb serve needs its token: send 'Authorization: Bearer <KB_SERVE_TOKEN>'"
_LOCAL_ONLY = (
    "without KB_SERVE_TOKEN, kb serve answers only requests addressed to localhost, 127.0.0.1 or [::1] "
    "from pages of this machine"
)


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) is this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: SecretStr | None) -> None:
    """Refuse to listen beyond this machine without a token."""
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"kb serve --host {host} would answer anyone who can reach it: set KB_SERVE_TOKEN "
            "(e.g. `export KB_SERVE_TOKEN=$(openssl rand -hex 32)`), or listen on 127.0.0.1"
        )


class Guard:
    """ASGI middleware in front of every route, MCP's included."""

    def __init__(self, app: ASGIApp, token: SecretStr | None) -> None:
        self.app = app
        self._token = None if token is None else token.get_secret_value().encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = self._refusal(scope) if scope["type"] == "http" else None
        if refusal is None:
            await self.app(scope, receive, send)
        else:
            await refusal(scope, receive, send)

    def _refusal(self, scope: Scope) -> JSONResponse | None:
        headers = Headers(scope=scope)
        if self._token is None:
            return None if _from_this_machine(headers) else JSONResponse({"detail": _LOCAL_ONLY}, 403)
        if _carries(headers.get("authorization", ""), self._token):
            return None
        return JSONResponse({"detail": _TOKEN_NEEDED}, 401, headers={"WWW-Authenticate": _challenge(headers)})


def _carries(authorization: str, token: bytes) -> bool:
    scheme, _, credentials = authorization.partition(" ")
    # Header values arrive decoded as Latin-1: encoding them back gives the bytes that were sent.
    if scheme.lower() == "bearer":
        given = credentials.strip().encode("latin-1")
    elif scheme.lower() == "basic":
        given = _basic_password(credentials.strip())
    else:
        return False
    return secrets.compare_digest(given, token)


def _basic_password(credentials: str) -> bytes:
    try:
        decoded = base64.b64decode(credentials.encode("latin-1"), validate=True)
    except (binascii.Error, ValueError):
        return b""
    return decoded.partition(b":")[2]


def _challenge(headers: Headers) -> str:
    """Basic for a browser opening a page (it then asks for the token), Bearer for programs."""
    if "text/html" in headers.get("accept", ""):
        return 'Basic realm="kb", charset="UTF-8"'
    return 'Bearer realm="kb"'


def _from_this_machine(headers: Headers) -> bool:
    origin = headers.get("origin")
    return _names_loopback("//" + headers.get("host", "")) and (origin is None or _names_loopback(origin))


def _names_loopback(url: str) -> bool:
    try:
        hostname = urlsplit(url).hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False
    return hostname is not None and is_loopback(hostname)
