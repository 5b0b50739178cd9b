"""A session: kernels that keep their state between requests (one per language it has used),
running its requests one at a time, in the order they were sent."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .errors import GatewayError, KernelDied, NoKernelForLanguage, NotWaitingForInput, SessionClosed
from .events import ExecutionStatus, Finished, SessionNotice
from .execution import ExecutionLimits, execute
from .kernel import Kernel
from .kernel_requests import request_beside
from .languages import Languages
from .queued_run import QueuedRun
from .quotas import ClientQuota
from .session_kernels import SessionKernels, Tap

log = logging.getLogger(__name__)


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
        request.begin(kernel)
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
        if request is not None:
            request.interrupt()

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
        kernel.send("stdin", kernel.client.session.msg("input_reply", {"value": value}))

    async def complete(self, code: str, cursor_pos: int, timeout: float, spec_name: str | None = None) -> dict[str, Any]:
        self.touch()
        kernel = await self.kernel_beside(spec_name)
        return await request_beside(kernel, "complete_request", {"code": code, "cursor_pos": cursor_pos}, timeout)

    async def inspect(
        self, code: str, cursor_pos: int, detail_level: int, timeout: float, spec_name: str | None = None
    ) -> dict[str, Any]:
        self.touch()
        kernel = await self.kernel_beside(spec_name)
        content = {"code": code, "cursor_pos": cursor_pos, "detail_level": detail_level}
        return await request_beside(kernel, "inspect_request", content, timeout)

    async def kernel_beside(self, spec_name: str | None) -> Kernel:
        """The kernel a request beside the running code goes to (completion, help, files); started if need be."""
        if self._state is SessionState.CLOSED:
            raise SessionClosed(f"session {self.id} is closed")
        return await self.kernels.get_or_start(spec_name or self.spec_name)

    async def close(self, hand_over: bool = False) -> None:
        """End the session: its kernels are shut down, or (`hand_over`) left running for
        the gateway that took the session over."""
        if self._state is SessionState.CLOSED:
            return
        reason = "the session moved to another gateway replica" if hand_over else "the session was closed"
        self._set_state(SessionState.CLOSED, reason)
        self._stop_reason = reason
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        while self._queue:
            self._queue.popleft().cancel(reason)
        self._listeners.clear()
        if hand_over:
            self.kernels.let_go_all()
        else:
            self.kernels.release_all()
        self.quota.session_closed()

