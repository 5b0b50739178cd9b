"""Who may come in: the Host a request names, its browser Origin, bearer tokens, and request
sizes, checked before any route runs (so no kernel starts for a refused client).

A web page can point its own DNS name at 127.0.0.1 ("DNS rebinding"): its requests then reach
a gateway on the developer's machine with `Host` and `Origin` both its own name. So only
allowed Host values are served (IP addresses, loopback names, and configured names), and a
browser's Origin must be configured, or the very origin of an allowed Host.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import WS_FORBIDDEN, WS_UNAUTHORIZED
from .metrics import Metrics
from .playground import wants_html
from .settings import Settings

ANONYMOUS = "anonymous"
FORWARDED = b"x-icotes-forwarded"  # see forwarding.py
OPEN_PATHS = frozenset({"/health"})
_UPLOAD = re.compile(r"/sessions/[^/]+/files/.")
# Methods that change something: from a browser, they need an allowed Origin even without a
# token (a simple cross-site POST is sent without asking CORS first).
_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def principal_of(conn: HTTPConnection) -> str:
    """The client a request speaks for: the name of its token; sessions belong to it."""
    return conn.scope.get("state", {}).get("principal", ANONYMOUS)


class AccessMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings, metrics: Metrics) -> None:
        self.app = app
        self.settings = settings
        self.failures = metrics.auth_failures
        self.open_paths = OPEN_PATHS | ({"/metrics"} if settings.metrics_public else set())
        # name -> token; GATEWAY_TOKEN is the client named "default"
        self.tokens = dict(settings.tokens)
        if settings.token:
            self.tokens["default"] = settings.token
        self.hosts = {h.lower() for h in settings.allowed_hosts}
        if not _is_address(settings.host):
            self.hosts.add(settings.host.lower())  # the name it was told to serve on
        # Another replica checked Host and Origin of what it forwards (forwarding.py).
        self.forwarded = forwarded_mark(settings.store_secret) if settings.store_url and settings.store_secret else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        refused = self._refused_browser(scope, scope["method"] in _CHANGING)
        if refused is not None:
            await _json(send, 403, refused)
            return
        if scope["method"] != "OPTIONS" and scope["path"] not in self.open_paths and not _browser_page(scope):
            principal = self._principal(scope)
            if principal is None:
                self.failures.labels("token").inc()
                await _json(send, 401, "missing or wrong token: send 'Authorization: Bearer <token>'",
                            [(b"www-authenticate", b"Bearer")])
                return
            scope.setdefault("state", {})["principal"] = principal
        upload = scope["method"] == "PUT" and _UPLOAD.match(scope["path"]) is not None
        limit, name = (self.settings.max_upload_bytes, "max_upload_bytes") if upload else (self.settings.max_body_bytes, "max_body_bytes")
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _json(send, 413, f"request body of {length} bytes is above {name} ({limit})")
            return
        # An upload streams on to the kernel, counted on the way (gateway/files.py).
        if length is None and scope["method"] in ("POST", "PUT", "PATCH") and not upload:
            # A chunked body: read it here, up to the limit, so an oversize one gets a 413
            # rather than a parse error from deep inside the app.
            body = await read_body(receive, limit)
            if body is None:
                await _json(send, 413, f"request body is above max_body_bytes ({limit})")
                return
            receive = replayed(body, receive)
        await self.app(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        refused = self._refused_browser(scope, True)  # a socket can always run code
        if refused is not None:
            await _refuse_socket(receive, send, WS_FORBIDDEN, refused)
            return
        principal = self._principal(scope)
        if principal is None:
            self.failures.labels("token").inc()
            await _refuse_socket(receive, send, WS_UNAUTHORIZED, "missing or wrong token")
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    def _refused_browser(self, scope: Scope, changing: bool) -> str | None:
        """Why a request must not be served: a Host not allowed, or (for one that can change
        something) a browser Origin not allowed. None: go on."""
        if is_forwarded(scope, self.forwarded):
            return None
        host = _header(scope, b"host")
        if host is not None and not self._host_allowed(host):
            self.failures.labels("host").inc()
            return f"host {host!r} is not allowed; add its name to GATEWAY_ALLOWED_HOSTS"
        origin = _header(scope, b"origin")
        if changing and origin is not None and not self._origin_allowed(origin, host):
            self.failures.labels("origin").inc()
            return f"origin {origin} is not allowed; add it to GATEWAY_CORS_ORIGINS"
        return None

    def _host_allowed(self, host: str) -> bool:
        """IP addresses (a rebinding page has a name), loopback names, configured names."""
        name = urlsplit(f"//{host}").hostname or ""
        return _is_address(name) or name == "localhost" or name.endswith(".localhost") or \
            name in self.hosts or "*" in self.hosts

    def _principal(self, scope: Scope) -> str | None:
        if not self.tokens:
            return ANONYMOUS
        presented = presented_token(scope)
        if presented is None:
            return None
        found = None
        for name, token in self.tokens.items():  # compare with all, in constant time each
            if hmac.compare_digest(presented.encode(), token.encode()):
                found = name
        return found

    def _origin_allowed(self, origin: str, host: str | None) -> bool:
        """Allowed: the CORS list, or the origin of the allowed Host it was sent to (a page
        the gateway itself served); never merely what `Host` says."""
        if origin in self.settings.cors_origins or "*" in self.settings.cors_origins:
            return True
        return host is not None and self._host_allowed(host) and urlsplit(origin).netloc.lower() == host.lower()


def _browser_page(scope: Scope) -> bool:
    """The playground, and `/` asked for by a browser: pages that hold nothing (playground.py)."""
    if scope["method"] != "GET":
        return False
    return scope["path"] == "/playground" or (scope["path"] == "/" and wants_html(_header(scope, b"accept") or ""))


def forwarded_mark(secret: str) -> str:
    """What a forwarded request carries: only replicas that know the store's secret make it."""
    return hmac.new(secret.encode(), b"icotes forwarded request", hashlib.sha256).hexdigest()


def is_forwarded(scope: Scope, mark: str | None) -> bool:
    presented = next((v for k, v in scope.get("headers", []) if k == FORWARDED), None)
    return mark is not None and presented is not None and hmac.compare_digest(presented, mark.encode())


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def presented_token(scope: Scope) -> str | None:
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


async def read_body(receive: Receive, limit: int | None = None) -> bytes | None:
    """The whole body, or None as soon as it passes `limit` bytes."""
    chunks, size = [], 0
    while True:
        message: Any = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if limit is not None and size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replayed(body: bytes, receive: Receive) -> Receive:
    """`receive`, giving `body` first (read already)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()  # then wait for the disconnect, as Starlette expects
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed
