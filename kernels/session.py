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
from .events import Event, ExecutionStatus, Finished, Output, SessionNotice, Status
from .execution import ExecutionLimits, execute
from .kernel import Kernel
from .pool import KernelPool

log = logging.getLogger(__name__)


# How long an interrupt waits for the running request's code to begin (then it goes anyway),
# how long after that it waits before it is sent, and how long each attempt waits for the
# run to end before the next.
_CODE_START_WAIT_S = 5.0
_CODE_SETTLE_S = 0.02
_INTERRUPT_WAITS_S = (1.0, 2.0, 4.0)


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
        self.ending = False  # the kernel has shown it is ending the run: an error, or idle

    def put(self, event: Event) -> None:
        if self.finished is not None:
            return
        if isinstance(event, Output) and event.output["output_type"] == "error":
            self.ending = True
        elif isinstance(event, Status) and event.execution_state == "idle":
            self.ending = True
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
        """Interrupt the running request, or the one about to run (a run and its interrupt
        can come in one breath); queued ones still run after it."""
        self.touch()
        request = self._current or next((r for r in self._queue if r.finished is None), None)
        if request is not None and self._interrupting is None:
            self._interrupting = asyncio.create_task(self._interrupt(request))

    async def _interrupt(self, request: Request) -> None:
        """Send SIGINT (or its control message) when it can work, and again if it did not.

        ipykernel ignores SIGINT from publishing `busy` until it begins the request, which it
        announces with `execute_input`; for a few milliseconds after that, a KeyboardInterrupt
        lands in ipykernel's own code, which drops the reply (see execution's
        `_REPLY_GRACE`); and one that lands just before a blocking call is only seen once the
        call returns. So: wait for the code to start and settle, then interrupt, and repeat
        while the run shows no sign of ending. Never while it is ending: a second interrupt
        that lands while the kernel still handles the first also makes it drop the reply.
        """
        kernel = self.kernel
        try:
            if not await self._code_started(kernel, request):
                return
            for wait in _INTERRUPT_WAITS_S:
                if self._current is not request or self.kernel is not kernel or request.ending:
                    return
                await kernel.interrupt()
                try:
                    await asyncio.wait_for(request.done.wait(), wait)
                    return
                except asyncio.TimeoutError:
                    pass
        finally:
            self._interrupting = None

    async def _code_started(self, kernel: Kernel, request: Request) -> bool:
        """Wait (bounded) until the kernel runs the request's code; False if it ended first."""
        waits = {asyncio.ensure_future(kernel.running_code.wait()), asyncio.ensure_future(request.done.wait())}
        try:
            await asyncio.wait(waits, timeout=_CODE_START_WAIT_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        settle = kernel.running_since + _CODE_SETTLE_S - time.monotonic()
        if settle > 0:
            await asyncio.sleep(settle)
        return not request.done.is_set()

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
