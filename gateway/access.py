"""Who may come in: bearer tokens, WebSocket origins, and request sizes, checked before any
route runs (so no kernel starts for a refused client)."""

from __future__ import annotations

import hmac
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import WS_FORBIDDEN_ORIGIN, WS_UNAUTHORIZED, BodyTooLarge
from .settings import Settings

ANONYMOUS = "anonymous"
OPEN_PATHS = frozenset({"/health"})


def principal_of(conn: HTTPConnection) -> str:
    """The client a request speaks for: the name of its token; sessions belong to it."""
    return conn.scope.get("state", {}).get("principal", ANONYMOUS)


class AccessMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        # name -> token; GATEWAY_TOKEN is the client named "default"
        self.tokens = dict(settings.tokens)
        if settings.token:
            self.tokens["default"] = settings.token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "OPTIONS" and scope["path"] not in OPEN_PATHS:
            principal = self._principal(scope)
            if principal is None:
                await _json(send, 401, "missing or wrong token: send 'Authorization: Bearer <token>'",
                            [(b"www-authenticate", b"Bearer")])
                return
            scope.setdefault("state", {})["principal"] = principal
        limit = self.settings.max_body_bytes
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _json(send, 413, f"request body of {length} bytes is above max_body_bytes ({limit})")
            return
        await self.app(scope, _limited(receive, limit), send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = _header(scope, b"origin")
        if origin is not None and not self._origin_allowed(origin, _header(scope, b"host")):
            await _refuse_socket(receive, send, WS_FORBIDDEN_ORIGIN, f"origin {origin} is not allowed")
            return
        principal = self._principal(scope)
        if principal is None:
            await _refuse_socket(receive, send, WS_UNAUTHORIZED, "missing or wrong token")
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    def _principal(self, scope: Scope) -> str | None:
        if not self.tokens:
            return ANONYMOUS
        presented = _presented_token(scope)
        if presented is None:
            return None
        found = None
        for name, token in self.tokens.items():  # compare with all, in constant time each
            if hmac.compare_digest(presented.encode(), token.encode()):
                found = name
        return found

    def _origin_allowed(self, origin: str, host: str | None) -> bool:
        """Allowed: the CORS list, or the gateway's own origin (a page it served)."""
        if origin in self.settings.cors_origins or "*" in self.settings.cors_origins:
            return True
        return host is not None and urlsplit(origin).netloc == host


def _presented_token(scope: Scope) -> str | None:
    header = _header(scope, b"authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() in ("bearer", "token") and value:
            return value.strip()
    query = parse_qs(scope.get("query_string", b"").decode())
    return query.get("token", [None])[0]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


async def _json(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or [])],
    })
    await send({"type": "http.response.body", "body": body})


async def _refuse_socket(receive: Receive, send: Send, code: int, reason: str) -> None:
    # Accept, then close: only a close frame carries a code the client can read.
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": code, "reason": reason})


def _limited(receive: Receive, limit: int) -> Receive:
    """A receive that stops a body without content-length (chunked) at the limit."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message: Any = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(f"request body is above max_body_bytes ({limit})")
        return message

    return wrapped
