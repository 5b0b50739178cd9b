"""The `/ws` endpoint: one session per socket, the icotes wire protocol."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from kernels.errors import KernelError, UnknownLanguage
from kernels.events import SessionNotice
from kernels.session import Session

from .frames import Frame, execution_frames, notice_frame, request_ids
from .models import ExecuteCode
from .runtime import Runtime, TimeoutTooLarge

log = logging.getLogger("gateway")
router = APIRouter()

_CLOSE = object()  # tells the sender to stop


class Connection:
    """One socket: a bounded send queue drained by one sender task.

    Producers wait when the queue is full, so a slow client slows its own executions
    instead of growing a buffer in the gateway.
    """

    def __init__(self, ws: WebSocket, runtime: Runtime, session: Session) -> None:
        self.ws = ws
        self.runtime = runtime
        self.session = session
        self._outbox: asyncio.Queue[Any] = asyncio.Queue(runtime.settings.send_queue_frames)
        self._tasks: set[asyncio.Task[None]] = set()
        self._sender = asyncio.create_task(self._send_loop())
        self._unlisten = session.listen(self._on_notice)

    async def send(self, frame: Frame) -> None:
        await self._outbox.put(frame)

    def _on_notice(self, notice: SessionNotice) -> None:
        if notice.state in ("busy", "idle") and not notice.message:
            return  # per-request status frames already say this
        self._spawn(self.send(notice_frame(notice)))

    async def _send_loop(self) -> None:
        try:
            while (frame := await self._outbox.get()) is not _CLOSE:
                await self.ws.send_text(json.dumps(frame))
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the socket went away; the receive loop notices and cleans up

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def error(self, message: str, ids: dict[str, str] | None = None) -> None:
        await self.send({"type": "error", **(ids or {}), "message": message})

    # -- client messages ---------------------------------------------------------------

    async def receive_loop(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                await self.error("binary frames are not supported; send JSON text frames")
                continue
            await self.dispatch(text)

    async def dispatch(self, text: str) -> None:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            await self.error(f"malformed JSON: {exc}")
            return
        if not isinstance(data, dict):
            await self.error("a message must be a JSON object with a 'type'")
            return
        ids = request_ids(_str_or_none(data.get("id")), _str_or_none(data.get("execution_id")))
        kind = data.get("type")
        handler = HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            known = ", ".join(sorted(HANDLERS))
            await self.error(f"unknown message type {kind!r}; known types: {known}", ids)
            return
        try:
            await handler(self, data, ids)
        except ValidationError as exc:
            await self.error(f"invalid {kind!r} message: {_describe(exc)}", ids)
        except (KernelError, TimeoutTooLarge) as exc:
            await self.error(str(exc), ids)

    async def on_execute(self, data: dict[str, Any], ids: dict[str, str]) -> None:
        msg = ExecuteCode.model_validate(data)
        if msg.language is not None:
            spec_name = self.runtime.languages.spec_for(msg.language)
            if spec_name != self.session.spec_name:
                await self.error(
                    f"this session runs {self.session.language}; open a socket with "
                    f"?language={msg.language} to run {msg.language}",
                    ids,
                )
                return
        limits = self.runtime.limits(msg.timeout)
        request = self.session.submit(msg.code, limits, allow_stdin=True)
        self._spawn(self._stream(request, ids))

    async def _stream(self, request: Any, ids: dict[str, str]) -> None:
        started = time.monotonic()
        async for frame in execution_frames(request, ids, started):
            await self.send(frame)
        log.info(
            "session %s: execution %s in %.3f s", self.session.id, frame["status"], frame["execution_time"]
        )

    async def on_ping(self, data: dict[str, Any], ids: dict[str, str]) -> None:
        await self.send({"type": "pong", **ids})

    # -- teardown ----------------------------------------------------------------------

    async def close(self) -> None:
        self._unlisten()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._outbox = asyncio.Queue()  # drop what was never sent
        self._outbox.put_nowait(_CLOSE)
        self._sender.cancel()
        await asyncio.gather(self._sender, return_exceptions=True)


Handler = Callable[[Connection, dict[str, Any], dict[str, str]], Awaitable[None]]

HANDLERS: dict[str, Handler] = {
    "execute_code": Connection.on_execute,
    "execute": Connection.on_execute,
    "ping": Connection.on_ping,
}


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _describe(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}" for e in exc.errors()
    )


@router.websocket("/ws")
async def websocket_session(ws: WebSocket) -> None:
    runtime: Runtime = ws.app.state.runtime
    await ws.accept()
    language = ws.query_params.get("language")
    try:
        session = await runtime.sessions.create(language)
    except KernelError as exc:
        await ws.send_text(json.dumps({"type": "error", "message": str(exc)}))
        # 4400: the request was bad; 1013: try again later (no kernel could be had).
        code = 4400 if isinstance(exc, UnknownLanguage) else 1013
        await ws.close(code=code, reason=str(exc)[:120])
        return
    runtime.connections += 1
    conn = Connection(ws, runtime, session)
    log.info("session %s: socket connected", session.id)
    try:
        await conn.send(_session_frame(session, resumed=False))
        await conn.receive_loop()
    except WebSocketDisconnect:
        pass
    finally:
        runtime.connections -= 1
        await conn.close()
        await runtime.sessions.close(session.id)
        log.info("session %s: socket closed", session.id)


def _session_frame(session: Session, resumed: bool) -> Frame:
    info = session.kernel.info.get("language_info", {})
    return {
        "type": "session",
        "session_id": session.id,
        "kernel": session.spec_name,
        "language": session.language,
        "language_version": info.get("version"),
        "resumed": resumed,
    }

