"""A session: kernels that keep their state between requests (one per language it has used),
running its requests one at a time, in the order they were sent."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from .errors import GatewayError, KernelDied, NoKernelForLanguage, NotWaitingForInput, SessionClosed
from .events import Event, ExecutionStatus, Finished, Output, SessionNotice, Status
from .execution import ExecutionLimits, execute
from .kernel import Kernel
from .languages import Languages
from .quotas import ClientQuota
from .session_kernels import SessionKernels, Tap

log = logging.getLogger(__name__)


# How long an interrupt waits for the running request's code to begin (then it goes anyway),
# how long after that it waits before it is sent, and how long each attempt waits for the
# run to end before the next.
_CODE_START_WAIT_S = 5.0
_CODE_SETTLE_S = 0.02
_INTERRUPT_WAITS_S = (1.0, 2.0, 4.0)


class SessionState(str, enum.Enum):
    """A session's state as its clients see it. A session is made on a ready kernel (there is
    no "starting"), and a kernel that dies is replaced at once (RESTARTING): its death is a
    notice, not a state the session stays in."""

    IDLE = "idle"
    BUSY = "busy"
    RESTARTING = "restarting"
    CLOSED = "closed"


_ACTIVE = {SessionState.IDLE, SessionState.BUSY, SessionState.RESTARTING}
# Each state may follow each active one (a notice may repeat a state, with its message);
# nothing follows CLOSED.
_NEXT = {**{state: {*_ACTIVE, SessionState.CLOSED} for state in _ACTIVE}, SessionState.CLOSED: set()}


class QueuedRun:
    """One queued or running execution; iterate it for its events, `Finished` last.
    (Not an HTTP request: any surface's execution, once submitted to a session.)"""

    def __init__(self, code: str, limits: ExecutionLimits, allow_stdin: bool, spec_name: str) -> None:
        self.code = code
        self.limits = limits
        self.allow_stdin = allow_stdin
        self.spec_name = spec_name
        self.kernel: Kernel | None = None  # the kernel it runs on, once it has begun
        self.started = asyncio.Event()
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

    def refuse(self, reason: str) -> None:
        """End it before it ran: it gets its result all the same, saying why."""
        self.put(Finished(ExecutionStatus.ERROR, None, reason))

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            event = await self._events.get()
            yield event
            if isinstance(event, Finished):
                return


Listener = Callable[[SessionNotice], None]


class Session:
    def __init__(
        self,
        session_id: str,
        spec_name: str,
        kernel: Kernel,
        quota: ClientQuota,
        languages: Languages,
        language_chosen: bool = True,
    ) -> None:
        self.id = session_id
        self.languages = languages
        self.quota = quota  # its client's share: its kernels come through it
        self.kernels = SessionKernels(quota, spec_name, kernel, self._wake)
        # A session made without a language (a bare /ws) takes the language of its first
        # request instead of keeping a kernel it never used.
        self._language_chosen = language_chosen
        self.created = time.time()
        self.last_activity = self.created
        self.connections = 0  # clients attached to it now
        self.runs = 0  # requests submitted so far
        self._state = SessionState.IDLE
        self._queue: deque[QueuedRun] = deque()
        self._wakeup = asyncio.Event()
        self._current: QueuedRun | None = None
        self._starting: QueuedRun | None = None  # the next to run, while its kernel is fetched
        self._running: asyncio.Task[None] | None = None
        self._listeners: list[Listener] = []
        self._stop_reason = "cancelled"
        self._interrupting: asyncio.Task[None] | None = None
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start running what is submitted (its worker task)."""
        self._worker = asyncio.create_task(self._work())

    # -- what it is ----------------------------------------------------------------------

    @property
    def spec_name(self) -> str:
        """The primary kernelspec: the one the session was made with."""
        return self.kernels.primary

    @property
    def language(self) -> str:
        return self.languages.language_of(self.spec_name)

    @property
    def kernel(self) -> Kernel:
        """The primary kernel (what the Jupyter API passes through to)."""
        kernel = self.kernels.main
        if kernel is None:
            raise KernelDied(f"the session's {self.language} kernel is being replaced")
        return kernel

    def kernel_list(self) -> list[dict[str, Any]]:
        """Each kernel of the session: its language, kernelspec and language version."""
        listed = []
        for spec_name in self.kernels.specs():
            kernel = self.kernels.get(spec_name)
            info = kernel.info.get("language_info") or {} if kernel is not None else {}
            listed.append({
                "language": self.languages.language_of(spec_name),
                "kernel": spec_name,
                "language_version": info.get("version"),
            })
        return listed

    # -- state -------------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        return self._state

    def _set_state(
        self, state: SessionState, message: str | None = None, lost: bool = False, spec_name: str | None = None
    ) -> None:
        if state not in _NEXT[self._state]:
            # Work that ends after the session closed (a kernel replacement) announces nothing.
            log.debug("session %s: no %s after %s", self.id, state.value, self._state.value)
            return
        self._state = state
        language = self.languages.language_of(spec_name) if spec_name else None
        notice = SessionNotice(state.value, message, lost, language)
        for listener in list(self._listeners):
            listener(notice)

    def _settle(self, message: str | None = None, lost: bool = False, spec_name: str | None = None) -> None:
        self._set_state(SessionState.BUSY if self._current else SessionState.IDLE, message, lost, spec_name)

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` with every session notice; returns the function that stops it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def tap(self, fn: Tap) -> Callable[[], None]:
        """Call `fn` with every message of the primary kernel and those that replace it."""
        return self.kernels.tap(fn)

    def touch(self) -> None:
        self.last_activity = time.time()

    def _wake(self) -> None:
        self._wakeup.set()

    # -- requests ----------------------------------------------------------------------

    def submit(
        self, code: str, limits: ExecutionLimits, allow_stdin: bool = False, spec_name: str | None = None
    ) -> QueuedRun:
        """Queue code to run, on the kernel of `spec_name` (the primary one by default),
        after every request submitted before it."""
        if self._state is SessionState.CLOSED:
            raise SessionClosed(f"session {self.id} is closed")
        request = QueuedRun(code, limits, allow_stdin, spec_name or self.spec_name)
        self.runs += 1
        self._queue.append(request)
        self._wakeup.set()
        self.touch()
        return request

    async def _work(self) -> None:
        while True:
            while not self._queue and not self.kernels.dead():
                self._wakeup.clear()
                await self._wakeup.wait()
            for spec_name in self.kernels.dead():  # died between requests: replace before the next
                kernel = self.kernels.get(spec_name)
                reason = kernel.exit_reason if kernel is not None else None
                await self._replace(spec_name, f"the {self.languages.language_of(spec_name)} kernel died ({reason or 'unknown cause'})")
            if not self._queue:
                continue
            request = self._queue.popleft()
            if request.finished is not None:  # cancelled while it waited
                continue
            self._starting = request
            try:
                kernel = await self._kernel_for(request)
            except BaseException:
                self._starting = None
                raise
            if kernel is None:
                self._starting = None
                continue
            # `_starting` stays set until the run's task has set `_current`: an interrupt that
            # comes in between (sent in the same breath as its run) must still find it.
            self._running = asyncio.create_task(self._run(request, kernel))
            try:
                await asyncio.wait({self._running})
            except asyncio.CancelledError:  # the session is closing: the run goes too
                self._running.cancel()
                await asyncio.gather(self._running, return_exceptions=True)
                raise
            finally:
                self._running = None
                self._starting = None

    async def _kernel_for(self, request: QueuedRun) -> Kernel | None:
        """The kernel the request runs on, from the pool on first use; None if there is
        none to be had, in which case the request has its result already."""
        try:
            if not self._language_chosen and request.spec_name != self.spec_name:
                await self.kernels.move_primary(request.spec_name)
            self._language_chosen = True
            return await self.kernels.get_or_start(request.spec_name)
        except GatewayError as exc:
            language = self.languages.language_of(request.spec_name)
            request.refuse(f"no {language} kernel could be had for this session: {exc}")
            return None

    async def _run(self, request: QueuedRun, kernel: Kernel) -> None:
        self._current = request
        self._starting = None
        request.kernel = kernel
        request.started.set()
        self._set_state(SessionState.BUSY)
        lost: str | None = None
        try:
            async for event in execute(kernel, request.code, request.limits, allow_stdin=request.allow_stdin):
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
            await self._replace(request.spec_name, lost)
        else:
            self._settle()

    # -- control -----------------------------------------------------------------------

    async def interrupt(self) -> None:
        """Interrupt the running request, or the one about to run (a run and its interrupt
        can come in one breath); queued ones still run after it."""
        self.touch()
        request = self._current or self._starting or next((r for r in self._queue if r.finished is None), None)
        if request is not None and self._interrupting is None:
            self._interrupting = asyncio.create_task(self._interrupt(request))

    async def _interrupt(self, request: QueuedRun) -> None:
        """Send SIGINT (or its control message) when it can work, and again if it did not.

        ipykernel ignores SIGINT from publishing `busy` until it begins the request, which it
        announces with `execute_input`; for a few milliseconds after that, a KeyboardInterrupt
        lands in ipykernel's own code, which drops the reply (see execution's
        `_REPLY_GRACE`); and one that lands just before a blocking call is only seen once the
        call returns. So: wait for the code to start and settle, then interrupt, and repeat
        while the run shows no sign of ending. Never while it is ending: a second interrupt
        that lands while the kernel still handles the first also makes it drop the reply.
        """
        try:
            kernel = await self._code_started(request)
            if kernel is None:
                log.debug("session %s: the run ended before its interrupt", self.id)
                return
            for wait in _INTERRUPT_WAITS_S:
                if self._current is not request or request.ending:
                    log.debug("session %s: the run is ending; no more interrupts", self.id)
                    return
                log.debug("session %s: interrupting kernel %s (its code runs: %s)", self.id, kernel.name, kernel.running_code.is_set())
                await kernel.interrupt()
                try:
                    await asyncio.wait_for(request.done.wait(), wait)
                    return
                except asyncio.TimeoutError:
                    pass
        finally:
            self._interrupting = None

    async def _code_started(self, request: QueuedRun) -> Kernel | None:
        """Wait (bounded) until the kernel runs the request's code; its kernel, or None if
        the request ended first."""
        deadline = time.monotonic() + _CODE_START_WAIT_S
        if not await _first(deadline, request.started.wait(), request.done.wait()) or request.kernel is None:
            return None
        kernel = request.kernel
        await _first(deadline, kernel.running_code.wait(), request.done.wait())
        settle = kernel.running_since + _CODE_SETTLE_S - time.monotonic()
        if settle > 0:
            await asyncio.sleep(settle)
        return None if request.done.is_set() else kernel

    async def restart(self, spec_name: str | None = None) -> None:
        """Fresh kernels, all state gone: every kernel of the session, or the one of
        `spec_name`. The running and queued requests that would use them are cancelled;
        those of other languages run on."""
        self.touch()
        specs = sorted({*self.kernels.specs(), self.spec_name}) if spec_name is None else [spec_name]
        if spec_name is not None and self.kernels.get(spec_name) is None and spec_name != self.spec_name:
            raise NoKernelForLanguage(f"this session has no {self.languages.language_of(spec_name)} kernel to restart")
        self.quota.check_starts(len(specs))  # refused before anything is stopped
        reason = "the kernel was restarted"
        for request in [r for r in self._queue if r.spec_name in specs]:
            self._queue.remove(request)
            request.cancel(reason)
        if self._current is not None and self._current.spec_name in specs and self._running is not None:
            self._stop_reason = reason
            self._running.cancel()
            await asyncio.gather(self._running, return_exceptions=True)
        errors = await asyncio.gather(*(self._replace(s, reason, raise_errors=True) for s in specs), return_exceptions=True)
        for error in errors:
            if isinstance(error, BaseException):
                raise error

    async def _replace(self, spec_name: str, why: str, raise_errors: bool = False) -> None:
        """A fresh kernel for `spec_name`, telling the listeners its state is gone."""
        language = self.languages.language_of(spec_name)
        message = f"{why}; a new {language} kernel was started and all its state was lost"
        self._set_state(SessionState.RESTARTING, message, lost=True, spec_name=spec_name)
        try:
            await self.kernels.replace(spec_name)
        except GatewayError as exc:
            log.warning("session %s: no new %s kernel: %s", self.id, spec_name, exc)
            self._settle(f"{why}; no new {language} kernel could be started ({exc}); the next run tries again", True, spec_name)
            if raise_errors:
                raise
            return
        log.info("session %s: %s kernel replaced", self.id, spec_name)
        self._settle(message, lost=True, spec_name=spec_name)

    def reply_input(self, value: str) -> None:
        """Answer the running request's `input()`."""
        kernel = self._current.kernel if self._current is not None else None
        if kernel is None or kernel.is_dead:
            raise NotWaitingForInput("no running code is waiting for input")
        kernel.client.input(value)

    async def complete(self, code: str, cursor_pos: int, timeout: float, spec_name: str | None = None) -> dict[str, Any]:
        self.touch()
        kernel = await self._kernel_beside(spec_name)
        return await kernel.request_beside("complete_request", {"code": code, "cursor_pos": cursor_pos}, timeout)

    async def inspect(
        self, code: str, cursor_pos: int, detail_level: int, timeout: float, spec_name: str | None = None
    ) -> dict[str, Any]:
        self.touch()
        kernel = await self._kernel_beside(spec_name)
        content = {"code": code, "cursor_pos": cursor_pos, "detail_level": detail_level}
        return await kernel.request_beside("inspect_request", content, timeout)

    async def _kernel_beside(self, spec_name: str | None) -> Kernel:
        """The kernel an editor's request (completion, help) goes to; started if need be."""
        if self._state is SessionState.CLOSED:
            raise SessionClosed(f"session {self.id} is closed")
        return await self.kernels.get_or_start(spec_name or self.spec_name)

    async def close(self) -> None:
        if self._state is SessionState.CLOSED:
            return
        self._set_state(SessionState.CLOSED, "the session was closed")
        reason = "the session was closed"
        self._stop_reason = reason
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        while self._queue:
            self._queue.popleft().cancel(reason)
        self._listeners.clear()
        self.kernels.release_all()
        self.quota.session_closed()


async def _first(deadline: float, *waits: Any) -> bool:
    """Wait for the first of `waits` until `deadline`; False if none came in time."""
    tasks = {asyncio.ensure_future(w) for w in waits}
    try:
        done, _ = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
    return bool(done)
