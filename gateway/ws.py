"""The `/ws` endpoint: one session per socket, the icotes wire protocol."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from kernels.errors import GatewayError, InvalidRequest

from .access import principal_of
from .channel import Replay, SessionChannel
from .deps import runtime_of
from .errors import close_code
from .frames import refused_result, request_ids
from .protocol import (
    Ack,
    CodeAtCursor,
    CompletionFrame,
    ErrorFrame,
    ExecuteCode,
    Frame,
    InputReply,
    InspectionFrame,
    PongFrame,
    Restart,
    SessionFrame,
    json_schema,
)
from .runtime import Runtime

log = logging.getLogger("gateway")
router = APIRouter()

_CLOSE = object()  # tells the sender to stop
_KICK_DRAIN_S = 2.0  # a kicked socket gets this long to take what was queued for it


class Connection:
    """One socket attached to a session's channel.

    Its send queue is bounded: when it is full, whoever publishes waits, so a slow client
    slows its own session's executions instead of growing a buffer in the gateway.
    """

    def __init__(self, ws: WebSocket, runtime: Runtime, channel: SessionChannel) -> None:
        self.ws = ws
        self.runtime = runtime
        self.channel = channel
        self.session = channel.session
        self._outbox: asyncio.Queue[Any] = asyncio.Queue(runtime.settings.send_queue_frames)
        self._backlog: list[str] = []  # sent before anything in the outbox
        self._sender: asyncio.Task[None] | None = None
        self.kicked: tuple[int, str] | None = None
        self._closer: asyncio.Future[None] | None = None

    def start(self, backlog: list[str]) -> None:
        self._backlog = backlog
        self._sender = asyncio.create_task(self._send_loop())

    async def send(self, text: str) -> None:
        if self.kicked is None:
            await self._outbox.put(text)

    def kick(self, code: int, reason: str) -> None:
        """Close this socket once what is queued is sent (taken over, or session closed)."""
        if self.kicked is None:
            self.kicked = (code, reason)
            self._closer = asyncio.ensure_future(self._close_after_drain())

    async def _close_after_drain(self) -> None:
        try:
            await asyncio.wait_for(self._outbox.put(_CLOSE), _KICK_DRAIN_S)
        except asyncio.TimeoutError:  # a client that reads nothing does not hold us up
            if self._sender is not None:
                self._sender.cancel()
            try:
                await self.ws.close(code=self.kicked[0], reason=self.kicked[1])
            except (RuntimeError, OSError):
                pass

    async def _send_loop(self) -> None:
        try:
            for text in self._backlog:
                await self.ws.send_text(text)
            self._backlog = []
            while (text := await self._outbox.get()) is not _CLOSE:
                await self.ws.send_text(text)
            if self.kicked is not None:
                await self.ws.close(code=self.kicked[0], reason=self.kicked[1])
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the socket went away; the receive loop notices and cleans up

    async def error(self, message: str, ids: dict[str, str] | None = None) -> None:
        await self.channel.publish(ErrorFrame(**(ids or {}), message=message))

    # -- client messages ---------------------------------------------------------------

    async def receive_loop(self) -> None:
        limit = self.runtime.settings.max_message_bytes
        while self.kicked is None:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                await self.error("binary frames are not supported; send JSON text frames")
            elif len(text) > limit:
                await self.refuse(_parse(text), f"message of {len(text)} bytes is above max_message_bytes ({limit})")
            else:
                await self.dispatch(text)

    async def dispatch(self, text: str) -> None:
        data = _parse(text)
        if isinstance(data, str):
            await self.error(data)
            return
        kind = data.get("type")
        handler = HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            known = ", ".join(sorted(HANDLERS))
            await self.refuse(data, f"unknown message type {kind!r}; known types: {known}")
            return
        try:
            await handler(self, data, _ids(data))
        except (ValidationError, GatewayError) as exc:
            reason = f"invalid {kind!r} message: {_describe(exc)}" if isinstance(exc, ValidationError) else str(exc)
            await self.refuse(data, reason)

    async def refuse(self, data: dict[str, Any] | str, reason: str) -> None:
        """Say why a message was refused. An execute_code that will not run still gets its
        one execution_result (after those sent before it), besides the error frame."""
        if isinstance(data, str):  # not even a JSON object: nothing to answer about
            await self.error(reason)
            return
        ids = _ids(data)
        await self.error(reason, ids)
        if HANDLERS.get(data.get("type")) is Connection.on_execute:  # type: ignore[arg-type]
            self.channel.publish_all(_one(refused_result(reason, ids)))

    async def on_execute(self, data: dict[str, Any], ids: dict[str, str]) -> None:
        msg = ExecuteCode.model_validate(data)
        frames = self.runtime.executions.in_session(
            self.session, msg.code, msg.language, msg.timeout, ids, allow_stdin=True, brief=msg.result == "brief"
        )
        # The channel owns the stream: output produced while no socket is attached is logged.
        self.channel.publish_all(frames)

    async def on_ping(self, data: dict[str, Any], ids: dict[str, str]) -> None:
        await self.channel.publish(PongFrame(**ids))

    async def on_ack(self, data: dict[str, Any], ids: dict[str, str]) -> None:
        seq = Ack.model_validate(data).seq
        if seq > self.channel.seq:
            await self.error(f"ack of seq {seq}, but the newest frame sent is {self.channel.seq}", ids)
            return
        self.channel.ack(seq)

    async def on_interrupt(self, data: dict[str, Any], ids: dict[str, str]) -> None:
        await self.session.interrupt()

    async def on_restart(self, data: dict[str, Any], ids: dict[str, str]) -> None:
        language = Restart.model_validate(data).language
        spec_name = self.runtime.languages.spec_for(language) if language else None
        # In the background: frames about the cancelled requests and the restart
        # notices must keep flowing while the new kernel is fetched.
        self.channel.spawn(self._guard(self.session.restart(spec_name), ids))

    async def on_input_reply(self, data: dict[str, Any], ids: dict[str, str]) -> None:
        self.session.reply_input(InputReply.model_validate(data).value)

    async def on_complete(self, data: dict[str, Any], ids: dict[str, str]) -> None:
        msg = CodeAtCursor.model_validate(data)
        self.channel.spawn(self._guard(self._complete(msg, ids), ids))

    async def _complete(self, msg: CodeAtCursor, ids: dict[str, str]) -> None:
        cursor = len(msg.code) if msg.cursor_pos is None else msg.cursor_pos
        spec_name = self.runtime.languages.spec_for(msg.language) if msg.language else None
        reply = await self.session.complete(msg.code, cursor, self.runtime.settings.request_timeout, spec_name)
        await self.channel.publish(CompletionFrame(
            **ids,
            matches=reply.get("matches", []),
            cursor_start=reply.get("cursor_start", cursor),
            cursor_end=reply.get("cursor_end", cursor),
            metadata=reply.get("metadata", {}),
        ))

    async def on_inspect(self, data: dict[str, Any], ids: dict[str, str]) -> None:
        msg = CodeAtCursor.model_validate(data)
        self.channel.spawn(self._guard(self._inspect(msg, ids), ids))

    async def _inspect(self, msg: CodeAtCursor, ids: dict[str, str]) -> None:
        cursor = len(msg.code) if msg.cursor_pos is None else msg.cursor_pos
        timeout = self.runtime.settings.request_timeout
        spec_name = self.runtime.languages.spec_for(msg.language) if msg.language else None
        reply = await self.session.inspect(msg.code, cursor, msg.detail_level, timeout, spec_name)
        await self.channel.publish(InspectionFrame(
            **ids, found=reply.get("found", False), data=reply.get("data", {}), metadata=reply.get("metadata", {}),
        ))

    async def _guard(self, work: Awaitable[None], ids: dict[str, str]) -> None:
        """Run background work for a client message; its failure becomes an error frame."""
        try:
            await work
        except GatewayError as exc:
            await self.error(str(exc), ids)

    async def on_close_session(self, data: dict[str, Any], ids: dict[str, str]) -> None:
        await self.runtime.sessions.close(self.session.id, "session closed by the client")

    # -- teardown ----------------------------------------------------------------------

    async def finish(self) -> None:
        """Let a kicked socket say goodbye, then stop sending."""
        if self._sender is None:
            return
        if self.kicked is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._sender), 2)
            except asyncio.TimeoutError:
                pass
        self._sender.cancel()
        await asyncio.gather(self._sender, return_exceptions=True)


Handler = Callable[[Connection, dict[str, Any], dict[str, str]], Awaitable[None]]

HANDLERS: dict[str, Handler] = {
    "execute_code": Connection.on_execute,
    "execute": Connection.on_execute,
    "ping": Connection.on_ping,
    "ack": Connection.on_ack,
    "interrupt": Connection.on_interrupt,
    "restart": Connection.on_restart,
    "input_reply": Connection.on_input_reply,
    "complete": Connection.on_complete,
    "inspect": Connection.on_inspect,
    "close_session": Connection.on_close_session,
}


async def _one(frame: Frame) -> AsyncIterator[Frame]:
    yield frame


def _parse(text: str) -> dict[str, Any] | str:
    """The message as a JSON object, or what is wrong with it."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"malformed JSON: {exc}"
    except RecursionError:  # brackets nested past the interpreter's stack
        return "malformed JSON: nested too deeply"
    if not isinstance(data, dict):
        return "a message must be a JSON object with a 'type'"
    return data


def _ids(data: dict[str, Any]) -> dict[str, str]:
    return request_ids(_str_or_none(data.get("id")), _str_or_none(data.get("execution_id")))


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _describe(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}" for e in exc.errors()
    )


@router.websocket("/ws")
async def websocket_session(ws: WebSocket) -> None:
    """A new session, or `?session_id=S` (with `&last_seq=N` to replay what was missed).

    A session made by a bare /ws ends `session_grace_s` after its socket goes, unless a
    client attaches again; a session made over REST lives until deleted or culled.
    """
    runtime = runtime_of(ws)
    owner = principal_of(ws)
    await ws.accept()
    session_id = ws.query_params.get("session_id")
    try:
        last_seq = _last_seq(ws.query_params.get("last_seq"))
        if session_id is not None:
            channel = runtime.sessions.get(session_id, owner)
        else:
            channel = await runtime.sessions.open(ws.query_params.get("language"), owner, owned_by_socket=True)
    except GatewayError as exc:
        await _refuse(ws, exc)
        return
    conn = Connection(ws, runtime, channel)
    replay = channel.attach(conn, last_seq)
    if last_seq is not None:
        runtime.metrics.replayed(len(replay.frames), replay.lost)
    resumed = session_id is not None
    conn.start([json.dumps(_session_frame(channel, resumed, replay).frame()), *replay.frames])
    runtime.connections += 1
    channel.session.connections += 1
    log.info("session %s: socket %s", channel.session.id, "resumed" if resumed else "connected")
    try:
        await conn.receive_loop()
    except WebSocketDisconnect:
        pass
    finally:
        runtime.connections -= 1
        channel.session.connections -= 1
        channel.detach(conn, runtime.settings.session_grace_s, runtime.sessions.expire(channel))
        await conn.finish()
        log.info("session %s: socket closed", channel.session.id)


def _last_seq(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isdigit():
        raise InvalidRequest(f"last_seq must be a non-negative integer, not {value!r}")
    return int(value)


async def _refuse(ws: WebSocket, exc: Exception) -> None:
    await ws.send_text(json.dumps(ErrorFrame(message=str(exc)).frame()))
    await ws.close(code=close_code(exc), reason=str(exc)[:120])


def _session_frame(channel: SessionChannel, resumed: bool, replay: Replay) -> SessionFrame:
    session = channel.session
    kernels = session.kernel_list()
    lost = {"from_seq": replay.lost[0], "to_seq": replay.lost[1]} if replay.lost is not None else None
    return SessionFrame(
        session_id=session.id,
        kernel=session.spec_name,
        language=session.language,
        language_version=kernels[0]["language_version"] if kernels else None,
        kernels=kernels,
        execution_state=session.state.value,
        resumed=resumed,
        last_seq=channel.seq,
        replayed=len(replay.frames),
        lost=lost,
    )


@router.get("/ws/schema", tags=["protocol"])
async def protocol_schema() -> dict[str, Any]:
    """The `/ws` protocol as JSON Schema: every client message and every server frame."""
    return json_schema()
