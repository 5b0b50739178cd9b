"""Who may come in: bearer tokens, WebSocket origins, and request sizes, checked before any
route runs (so no kernel starts for a refused client)."""

from __future__ import annotations

import hmac
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import WS_FORBIDDEN_ORIGIN, WS_UNAUTHORIZED
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
        if length is None and scope["method"] in ("POST", "PUT", "PATCH"):
            # A chunked body: read it here, up to the limit, so an oversize one gets a 413
            # rather than a parse error from deep inside the app.
            body = await _read_body(receive, limit)
            if body is None:
                await _json(send, 413, f"request body is above max_body_bytes ({limit})")
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)

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


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as it passes `limit` bytes."""
    chunks, size = [], 0
    while True:
        message: Any = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()  # then wait for the disconnect, as Starlette expects
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed
