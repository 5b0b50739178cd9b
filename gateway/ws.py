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

from kernels.errors import KernelError, SessionNotFound, UnknownLanguage
from kernels.events import SessionNotice
from kernels.session import Session

from .frames import Frame, execution_frames, notice_frame, request_ids
from .models import CodeAtCursor, ExecuteCode, InputReply
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
        self.close_requested = False

    async def send(self, frame: Frame) -> None:
        await self._outbox.put(frame)

    def _on_notice(self, notice: SessionNotice) -> None:
        if notice.state in ("busy", "idle") and not notice.message:
            return  # per-request status frames already say this
        self._spawn(self.send(notice_frame(notice)))
        if notice.state == "closed":  # closed from elsewhere, e.g. DELETE /sessions/{id}
            self.close_requested = True
            self._spawn(self._close_socket())

    async def _close_socket(self) -> None:
        await self._outbox.join()
        await self.ws.close(code=1000, reason="session closed")

    async def _send_loop(self) -> None:
        try:
            while (frame := await self._outbox.get()) is not _CLOSE:
                await self.ws.send_text(json.dumps(frame))
                self._outbox.task_done()
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
            if self.close_requested:
                return
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

    async def on_interrupt(self, data: dict[str, Any], ids: dict[str, str]) -> None:
        await self.session.interrupt()

    async def on_restart(self, data: dict[str, Any], ids: dict[str, str]) -> None:
        # In the background: frames about the cancelled requests and the restart
        # notices must keep flowing while the new kernel is fetched.
        self._spawn(self._guard(self.session.restart(), ids))

    async def on_input_reply(self, data: dict[str, Any], ids: dict[str, str]) -> None:
        self.session.reply_input(InputReply.model_validate(data).value)

    async def on_complete(self, data: dict[str, Any], ids: dict[str, str]) -> None:
        msg = CodeAtCursor.model_validate(data)
        self._spawn(self._guard(self._complete(msg, ids), ids))

    async def _complete(self, msg: CodeAtCursor, ids: dict[str, str]) -> None:
        cursor = len(msg.code) if msg.cursor_pos is None else msg.cursor_pos
        reply = await self.session.complete(msg.code, cursor, self.runtime.settings.request_timeout)
        await self.send({
            "type": "completion",
            **ids,
            "matches": reply.get("matches", []),
            "cursor_start": reply.get("cursor_start", cursor),
            "cursor_end": reply.get("cursor_end", cursor),
            "metadata": reply.get("metadata", {}),
        })

    async def on_inspect(self, data: dict[str, Any], ids: dict[str, str]) -> None:
        msg = CodeAtCursor.model_validate(data)
        self._spawn(self._guard(self._inspect(msg, ids), ids))

    async def _inspect(self, msg: CodeAtCursor, ids: dict[str, str]) -> None:
        cursor = len(msg.code) if msg.cursor_pos is None else msg.cursor_pos
        timeout = self.runtime.settings.request_timeout
        reply = await self.session.inspect(msg.code, cursor, msg.detail_level, timeout)
        await self.send({
            "type": "inspection",
            **ids,
            "found": reply.get("found", False),
            "data": reply.get("data", {}),
            "metadata": reply.get("metadata", {}),
        })

    async def _guard(self, work: Awaitable[None], ids: dict[str, str]) -> None:
        """Run background work for a client message; its failure becomes an error frame."""
        try:
            await work
        except KernelError as exc:
            await self.error(str(exc), ids)

    async def on_close_session(self, data: dict[str, Any], ids: dict[str, str]) -> None:
        self.close_requested = True
        await self._close_socket()

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
    "interrupt": Connection.on_interrupt,
    "restart": Connection.on_restart,
    "input_reply": Connection.on_input_reply,
    "complete": Connection.on_complete,
    "inspect": Connection.on_inspect,
    "close_session": Connection.on_close_session,
}


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _describe(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}" for e in exc.errors()
    )


@router.websocket("/ws")
async def websocket_session(ws: WebSocket) -> None:
    """A session per socket; `?session_id=` attaches to an existing one instead.

    A session the socket created ends with it; one it attached to lives on.
    """
    runtime: Runtime = ws.app.state.runtime
    await ws.accept()
    session_id = ws.query_params.get("session_id")
    try:
        if session_id is not None:
            session, owned = runtime.sessions.get(session_id), False
        else:
            session, owned = await runtime.sessions.create(ws.query_params.get("language")), True
    except KernelError as exc:
        await _refuse(ws, exc)
        return
    runtime.connections += 1
    session.connections += 1
    conn = Connection(ws, runtime, session)
    log.info("session %s: socket connected", session.id)
    try:
        await conn.send(_session_frame(session, resumed=not owned))
        await conn.receive_loop()
    except WebSocketDisconnect:
        pass
    finally:
        runtime.connections -= 1
        session.connections -= 1
        await conn.close()
        if owned or conn.close_requested:
            await runtime.sessions.discard(session.id)
        log.info("session %s: socket closed", session.id)


async def _refuse(ws: WebSocket, exc: KernelError) -> None:
    await ws.send_text(json.dumps({"type": "error", "message": str(exc)}))
    # 4404: no such session; 4400: a bad request; 1013: try again later (no kernel to be had)
    code = 4404 if isinstance(exc, SessionNotFound) else 4400 if isinstance(exc, UnknownLanguage) else 1013
    await ws.close(code=code, reason=str(exc)[:120])


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

