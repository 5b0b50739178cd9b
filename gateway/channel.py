"""A session's outgoing frames: numbered, kept in a bounded log, sent to the attached socket.

The channel outlives sockets: executions keep publishing while no client is attached, and a
client that comes back with `last_seq` gets every frame after it from the log, exactly once,
in order, before anything live.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from kernels.events import SessionNotice
from kernels.session import Session

from .errors import WS_NORMAL, WS_TAKEN_OVER
from .frame_log import FrameLog
from .frames import notice_frame
from .protocol import Frame

log = logging.getLogger("gateway")


class Sink(Protocol):
    """Where a channel's frames go, as JSON text: one attached socket."""

    async def send(self, text: str) -> None: ...

    def kick(self, code: int, reason: str) -> None: ...


class Mirror(Protocol):
    """Where else a channel's frames are kept: the replicas' shared store (replicas.py)."""

    async def keep(self, seq: int, text: str) -> None: ...


class Replay:
    """What a re-attaching client missed: the frames after its `last_seq`, and the gap the
    log's bound made, if any (seqs from `lost_from` to `lost_to` are gone)."""

    def __init__(self, frames: list[str], lost: tuple[int, int] | None) -> None:
        self.frames = frames  # as JSON text
        self.lost = lost


class SessionChannel:
    def __init__(
        self, session: Session, owner: str, log_frames: int, log_bytes: int, owned_by_socket: bool
    ) -> None:
        self.session = session
        self.owner = owner
        self.owned_by_socket = owned_by_socket  # created by a bare /ws: ends after its grace
        # JSON text, serialised once for the socket and for any replay
        self._log = FrameLog(log_frames, log_bytes)
        self.sink: Sink | None = None
        self.mirror: Mirror | None = None
        self._order = asyncio.Lock()  # with a mirror, a frame may wait for it; none overtakes
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_stream: asyncio.Task[None] | None = None
        self.expiry: asyncio.TimerHandle | None = None
        self._unlisten = session.listen(self._on_notice)

    # -- publishing --------------------------------------------------------------------

    @property
    def seq(self) -> int:
        """The seq of the newest frame so far."""
        return self._log.last_seq

    async def publish(self, frame: Frame) -> None:
        if self.mirror is None:
            text = frame.numbered(self.seq + 1)
            self._log.append(text)
            if self.sink is not None:
                await self.sink.send(text)
            return
        async with self._order:
            seq = self.seq + 1
            text = frame.numbered(seq)
            self._log.append(text)
            await self.mirror.keep(seq, text)
            if self.sink is not None:
                await self.sink.send(text)

    def resume_log(self, frames: list[tuple[int, str]], next_seq: int) -> None:
        """Take over another replica's log: its `frames` (seq, text), oldest first, kept for
        replay; seqs it never stored (up to `next_seq`, which the next frame gets) are
        empty places, skipped in a replay: the frame that says they are lost follows."""
        if not frames or next_seq - frames[0][0] > 4 * self._log.max_frames:
            self._log.start_at(next_seq)
            return
        self._log.start_at(frames[0][0])
        stored = dict(frames)
        for seq in range(frames[0][0], next_seq):
            self._log.append(stored.get(seq, ""))

    def publish_all(self, frames: AsyncIterator[Frame]) -> asyncio.Task[None]:
        """Publish an execution's frames, after those of every execution before it.

        Executions run one at a time, but their frames are published by separate tasks; a
        task held up by a slow client must not let the next execution's frames overtake.
        """
        previous = self._last_stream

        async def run() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            async for frame in frames:
                await self.publish(frame)

        self._last_stream = task = asyncio.ensure_future(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _on_notice(self, notice: SessionNotice) -> None:
        if notice.state in ("busy", "idle") and not notice.message:
            return  # the per-request status frames say this already
        if notice.state != "closed":
            self.spawn(self.publish(notice_frame(notice)))

    def spawn(self, work: Awaitable[None]) -> None:
        """Run work that belongs to the session, not to the socket that asked for it."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- sockets -----------------------------------------------------------------------

    def attach(self, sink: Sink, last_seq: int | None) -> Replay:
        """Make `sink` the session's socket; the one before it is taken over.

        Synchronous on purpose: no frame can be published between the snapshot of the log
        and the switch, so replay and live frames neither overlap nor leave a hole.
        """
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        if self.sink is not None:
            self.sink.kick(WS_TAKEN_OVER, "taken over by a newer connection to this session")
        self.sink = sink
        if last_seq is None:
            return Replay([], None)
        frames, lost = self._log.since(last_seq)
        return Replay([f for f in frames if f], lost)

    def ack(self, seq: int) -> None:
        """The client has every frame up to `seq` (at most `self.seq`): they need not be
        kept for a replay."""
        self._log.drop_through(seq)

    def detach(self, sink: Sink, grace: float, expire: Callable[[], None]) -> None:
        if self.sink is not sink:
            return  # taken over: the newer socket owns the session now
        self.sink = None
        if self.owned_by_socket:
            self.expiry = asyncio.get_running_loop().call_later(grace, expire)

    @property
    def attached(self) -> bool:
        return self.sink is not None

    async def close(self, reason: str, code: int = WS_NORMAL) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
        self._unlisten()
        if self.sink is not None:
            self.sink.kick(code, reason)
            self.sink = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
