"""A session: one kernel that keeps its state between requests, run one request at a time."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from .errors import KernelDied, SessionClosed
from .events import Event, ExecutionStatus, Finished, SessionNotice
from .execution import ExecutionLimits, execute
from .kernel import Kernel
from .pool import KernelPool

log = logging.getLogger(__name__)


_INTERRUPT_ATTEMPTS = 5
_INTERRUPT_RETRY_S = 0.4


class SessionState(str, enum.Enum):
    IDLE = "idle"
    BUSY = "busy"
    RESTARTING = "restarting"
    CLOSED = "closed"


class Request:
    """One queued or running execution; iterate it for its events, `Finished` last."""

    def __init__(self, code: str, limits: ExecutionLimits, allow_stdin: bool) -> None:
        self.code = code
        self.limits = limits
        self.allow_stdin = allow_stdin
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self.finished: Finished | None = None
        self.done = asyncio.Event()

    def put(self, event: Event) -> None:
        if self.finished is not None:
            return
        if isinstance(event, Finished):
            self.finished = event
            self.done.set()
        self._events.put_nowait(event)

    def cancel(self, reason: str) -> None:
        self.put(Finished(ExecutionStatus.CANCELLED, None, reason))

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            event = await self._events.get()
            yield event
            if isinstance(event, Finished):
                return


Listener = Callable[[SessionNotice], None]


class Session:
    def __init__(
        self, session_id: str, language: str, spec_name: str, kernel: Kernel, pool: KernelPool
    ) -> None:
        self.id = session_id
        self.language = language
        self.spec_name = spec_name
        self.kernel = kernel
        self._pool = pool
        self.created = time.time()
        self.last_activity = self.created
        self.connections = 0  # clients attached to it now
        self.runs = 0  # requests submitted so far
        self._taps: list[Callable[[dict[str, Any]], None]] = []
        self._state = SessionState.IDLE
        self._queue: deque[Request] = deque()
        self._wakeup = asyncio.Event()
        self._current: Request | None = None
        self._listeners: list[Listener] = []
        self._stop_reason = "cancelled"
        self._interrupting: asyncio.Task[None] | None = None
        kernel.on_death.append(self._wakeup.set)
        self._worker = asyncio.create_task(self._work())

    # -- state -------------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        return self._state

    def _set_state(self, state: SessionState, message: str | None = None, lost: bool = False) -> None:
        self._state = state
        notice = SessionNotice(state.value, message, lost)
        for listener in list(self._listeners):
            listener(notice)

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` with every session notice; returns the function that stops it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def tap(self, fn: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call `fn` with every message of the session's kernel, this one and the ones that
        replace it; returns the function that stops it."""
        self._taps.append(fn)
        self.kernel.taps.append(fn)

        def stop() -> None:
            for taps in (self._taps, self.kernel.taps):
                if fn in taps:
                    taps.remove(fn)

        return stop

    def _swap_kernel(self, new: Kernel) -> Kernel:
        old, self.kernel = self.kernel, new
        old.taps.clear()
        old.on_death.clear()
        new.taps.extend(self._taps)
        new.on_death.append(self._wakeup.set)
        return old

    def touch(self) -> None:
        self.last_activity = time.time()

    # -- requests ----------------------------------------------------------------------

    def submit(self, code: str, limits: ExecutionLimits, allow_stdin: bool = False) -> Request:
        """Queue code to run after every request submitted before it."""
        if self._state is SessionState.CLOSED:
            raise SessionClosed(f"session {self.id} is closed")
        request = Request(code, limits, allow_stdin)
        self.runs += 1
        self._queue.append(request)
        self._wakeup.set()
        self.touch()
        return request

    async def _work(self) -> None:
        while True:
            while not self._queue and not self.kernel.is_dead:
                self._wakeup.clear()
                await self._wakeup.wait()
            if self.kernel.is_dead:  # died between requests: replace it before the next
                reason = self.kernel.exit_reason or "unknown cause"
                await self._replace_kernel(f"the kernel died ({reason}); a new kernel was started and all state was lost")
                continue
            request = self._queue.popleft()
            if request.finished is not None:  # cancelled while it waited
                continue
            await self._run(request)

    async def _run(self, request: Request) -> None:
        self._current = request
        self._set_state(SessionState.BUSY)
        lost: str | None = None
        try:
            async for event in execute(
                self.kernel, request.code, request.limits, allow_stdin=request.allow_stdin
            ):
                if isinstance(event, Finished) and event.kernel_lost:
                    lost = event.reason
                request.put(event)
        except asyncio.CancelledError:  # restart or close: they say why
            request.cancel(self._stop_reason)
            raise
        except Exception as exc:  # a broken kernel connection must not kill the worker
            log.exception("session %s: execution failed", self.id)
            lost = f"the kernel connection failed: {exc}"
            request.put(Finished(ExecutionStatus.DIED, None, lost, kernel_lost=True))
        finally:
            self._current = None
            self.touch()
        if lost is not None:
            await self._replace_kernel(f"{lost}; a new kernel was started and all state was lost")
        else:
            self._set_state(SessionState.IDLE)

    # -- control -----------------------------------------------------------------------

    async def interrupt(self) -> None:
        """Interrupt the running request, if any; queued ones still run after it."""
        self.touch()
        request = self._current
        if request is not None and self._interrupting is None:
            self._interrupting = asyncio.create_task(self._interrupt(request))

    async def _interrupt(self, request: Request) -> None:
        # ipykernel ignores SIGINT between publishing `busy` and starting the code, so one
        # interrupt sent at the very start of a run can be lost: repeat it while it runs.
        try:
            for _ in range(_INTERRUPT_ATTEMPTS):
                if self._current is not request:
                    return
                await self.kernel.interrupt()
                try:
                    await asyncio.wait_for(request.done.wait(), _INTERRUPT_RETRY_S)
                    return
                except asyncio.TimeoutError:
                    pass
        finally:
            self._interrupting = None

    async def restart(self) -> None:
        """Fresh kernel, all state gone; the running and queued requests are cancelled."""
        self.touch()
        await self._stop_worker("the kernel was restarted")
        await self._replace_kernel("the kernel was restarted; all state was lost")
        self._worker = asyncio.create_task(self._work())

    async def _stop_worker(self, reason: str) -> None:
        """Cancel the running request and every queued one, saying why."""
        self._stop_reason = reason
        self._worker.cancel()
        await asyncio.gather(self._worker, return_exceptions=True)
        while self._queue:
            self._queue.popleft().cancel(reason)

    async def _replace_kernel(self, message: str) -> None:
        # A ready kernel from the pool is faster than rebooting this one.
        self._set_state(SessionState.RESTARTING, message, lost=True)
        old = self._swap_kernel(await self._pool.acquire(self.spec_name))
        self._pool.release(old)
        log.info("session %s: kernel replaced", self.id)
        self._set_state(SessionState.IDLE, message, lost=True)

    async def switch_language(self, language: str, spec_name: str) -> None:
        """Give a session that has run nothing yet a kernel of another language (a client
        that opens a bare socket says the language only with its first request)."""
        if self.runs:
            raise SessionClosed(f"this session runs {self.language} and has state; open another for {language}")
        old = self._swap_kernel(await self._pool.acquire(spec_name))
        self.language, self.spec_name = language, spec_name
        self._pool.release(old)

    def reply_input(self, value: str) -> None:
        if self.kernel.is_dead:
            raise KernelDied("the kernel is dead")
        self.kernel.client.input(value)

    async def complete(self, code: str, cursor_pos: int, timeout: float) -> dict[str, Any]:
        self.touch()
        return await self.kernel.request_beside(
            "complete_request", {"code": code, "cursor_pos": cursor_pos}, timeout
        )

    async def inspect(
        self, code: str, cursor_pos: int, detail_level: int, timeout: float
    ) -> dict[str, Any]:
        self.touch()
        content = {"code": code, "cursor_pos": cursor_pos, "detail_level": detail_level}
        return await self.kernel.request_beside("inspect_request", content, timeout)

    async def close(self) -> None:
        if self._state is SessionState.CLOSED:
            return
        self._set_state(SessionState.CLOSED, "the session was closed")
        await self._stop_worker("the session was closed")
        self._listeners.clear()
        self._pool.release(self.kernel)
