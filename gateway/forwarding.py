"""Any replica serves any session: a request about a session this replica does not hold is
forwarded, as it came, to the replica that does (REST and NDJSON streamed through, sockets
piped both ways); one whose replica died is taken over here first (replicas.py).

Runs after the access checks: only a client that may use the gateway at all is forwarded.
The replica it is forwarded to checks its token and the session's owner again; Host and
Origin were checked here, against the same settings, so a forwarded request carries a mark
made from the store's secret that vouches for that, and is never forwarded a second time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import httpx
import websockets
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kernels.errors import GatewayError, SessionMoving

from .access import FORWARDED, is_forwarded, read_body, replayed
from .errors import RETRY_AFTER_S, close_code, error_body, http_status
from .protocol import ErrorFrame

if TYPE_CHECKING:
    from .replicas import Replicas

log = logging.getLogger("gateway")

_PATHS = (re.compile(r"^/sessions/([^/]+)"), re.compile(r"^/api/kernels/([^/]+)"))
_NOTEBOOK = re.compile(r"^/api/sessions/([^/]+)$")
# Hop-by-hop headers (RFC 9110 7.6.1), and those the proxy's own client sets (Host: the
# replica forwarded to does not check it, see above).
_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
    b"content-length", b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions",
    b"sec-websocket-accept", b"host", FORWARDED,
})

_OWN = frozenset({b"date", b"server"})  # response headers this replica's server sets itself


class Forwarding:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def _where(self, scope: Scope, session_id: str | None, replicas: Replicas) -> str | None:
        """The address of the replica to forward to; None: serve here."""
        if session_id is None and (notebook := _NOTEBOOK.match(scope["path"])) is not None:
            # A Jupyter session is served where its kernel is.
            session_id = await scope["app"].state.notebook_sessions.kernel_of(notebook.group(1))
        if session_id is None or session_id in replicas.registry:
            return None
        principal = scope.get("state", {}).get("principal", "")
        return await replicas.locate(session_id, principal, is_forwarded(scope, replicas.mark))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        replicas: Replicas | None = getattr(scope["app"].state.runtime, "replicas", None) \
            if scope["type"] in ("http", "websocket") else None
        if replicas is None:
            await self.app(scope, receive, send)
            return
        session_id, receive = await _session_of(scope, receive)
        try:
            address = await self._where(scope, session_id, replicas)
        except GatewayError as exc:
            await _refuse(scope, receive, send, exc)
            return
        except RedisError as exc:
            log.warning("store: unreachable while looking for where to serve %s: %s", scope["path"], exc)
            await _refuse(scope, receive, send, SessionMoving("the replicas' session store is unreachable; try again"))
            return
        if address is None:  # here now (taken over), or nowhere: the route says which
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            await _http(scope, receive, send, address, replicas)
        else:
            await _websocket(scope, receive, send, address, replicas.mark)


async def _http(scope: Scope, receive: Receive, send: Send, address: str, replicas: Replicas) -> None:
    url = address + scope["path"] + (("?" + scope["query_string"].decode()) if scope["query_string"] else "")
    # The body streams on as it comes (an upload can be large), never held whole here.
    request = replicas.http.build_request(scope["method"], url, headers=_headers(scope, replicas.mark), content=_body(receive))
    try:
        response = await replicas.http.send(request, stream=True)
    except httpx.TransportError:
        await _refuse(scope, receive, send, SessionMoving("the replica serving this session did not answer; try again"))
        return
    try:
        headers = [(k, v) for k, v in response.headers.raw if k.lower() not in _HOP and k.lower() not in _OWN]
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    except httpx.TransportError:
        log.warning("forwarding: the replica at %s went away mid-response", address)
    finally:
        await response.aclose()


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        if chunk := message.get("body", b""):
            yield chunk
        if not message.get("more_body", False):
            return


async def _websocket(scope: Scope, receive: Receive, send: Send, address: str, mark: str) -> None:
    url = "ws" + address.removeprefix("http") + scope["path"] + (("?" + scope["query_string"].decode()) if scope["query_string"] else "")
    if (await receive())["type"] != "websocket.connect":
        return
    try:
        upstream = await websockets.connect(
            url, additional_headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in _headers(scope, mark)],
            subprotocols=scope.get("subprotocols") or None, open_timeout=3, max_size=None, compression=None,
        )
    except (OSError, websockets.InvalidHandshake, asyncio.TimeoutError):
        await send({"type": "websocket.accept"})
        exc = SessionMoving("the replica serving this session did not answer; reconnect")
        await send({"type": "websocket.close", "code": close_code(exc), "reason": str(exc)})
        return
    await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
    async with upstream:
        await _pipe(receive, send, upstream)


async def _pipe(receive: Receive, send: Send, upstream: Any) -> None:
    """Frames both ways until either side closes; the close code travels too."""

    async def down() -> None:
        try:
            async for message in upstream:
                key = "text" if isinstance(message, str) else "bytes"
                await send({"type": "websocket.send", key: message})
        except websockets.ConnectionClosed:
            pass
        rcvd = upstream.close_rcvd
        await send({"type": "websocket.close", "code": rcvd.code if rcvd else 1011, "reason": rcvd.reason if rcvd else ""})

    async def up() -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "websocket.disconnect":
                await upstream.close(message.get("code", 1000))
                return
            data = message.get("text") if message.get("text") is not None else message.get("bytes")
            if data is not None:
                await upstream.send(data)

    tasks = [asyncio.ensure_future(down()), asyncio.ensure_future(up())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _session_of(scope: Scope, receive: Receive) -> tuple[str | None, Receive]:
    """The session a request is about, if any; `POST /execute` names it in its body (read
    here, and handed on as it came)."""
    path = scope["path"]
    for pattern in _PATHS:
        if (match := pattern.match(path)) is not None:
            return match.group(1), receive
    if path == "/ws":
        return parse_qs(scope.get("query_string", b"").decode()).get("session_id", [None])[0], receive
    if path == "/execute" and scope["type"] == "http" and scope["method"] == "POST":
        body = await read_body(receive) or b""
        try:
            session_id = json.loads(body).get("session_id")
        except (ValueError, AttributeError, RecursionError):
            session_id = None
        return (session_id if isinstance(session_id, str) else None), replayed(body, receive)
    return None, receive


def _headers(scope: Scope, mark: str) -> list[tuple[bytes, bytes]]:
    kept = [(k, v) for k, v in scope.get("headers", []) if k not in _HOP and not k.startswith(b"sec-websocket-protocol")]
    return [*kept, (FORWARDED, mark.encode())]


async def _refuse(scope: Scope, receive: Receive, send: Send, exc: GatewayError) -> None:
    if scope["type"] == "http":
        status = http_status(exc)
        body = json.dumps(error_body(scope["path"], status, str(exc))).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if status == 503:
            headers.append((b"retry-after", str(RETRY_AFTER_S).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": json.dumps(ErrorFrame(message=str(exc)).frame())})
    await send({"type": "websocket.close", "code": close_code(exc), "reason": str(exc)[:120]})
