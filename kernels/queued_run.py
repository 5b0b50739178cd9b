"""One execution submitted to a session: its events as they come, its end, and its interrupt."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from .events import Event, ExecutionStatus, Finished, Output, Status
from .execution import ExecutionLimits
from .kernel import Kernel

log = logging.getLogger(__name__)

# How long an interrupt waits for the run's code to begin (then it goes anyway), how long
# after that it waits before it is sent, and how long each attempt waits for the run to end
# before the next.
_CODE_START_WAIT_S = 5.0
_CODE_SETTLE_S = 0.02
_INTERRUPT_WAITS_S = (1.0, 2.0, 4.0)


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
        self._interrupting: asyncio.Task[None] | None = None

    def begin(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.started.set()

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

    # -- interrupt ---------------------------------------------------------------------

    def interrupt(self) -> None:
        """Interrupt it as soon as that can work: it may be queued still, or about to begin
        (a run and its interrupt can come in one breath). Once at a time."""
        if self._interrupting is None and self.finished is None:
            self._interrupting = asyncio.create_task(self._interrupt())

    async def _interrupt(self) -> None:
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
            kernel = await self._code_started()
            if kernel is None:
                log.debug("the run ended before its interrupt")
                return
            for wait in _INTERRUPT_WAITS_S:
                if self.done.is_set() or self.ending:
                    log.debug("kernel %s: the run is ending; no more interrupts", kernel.name)
                    return
                log.debug("interrupting kernel %s (its code runs: %s)", kernel.name, kernel.running_code.is_set())
                await kernel.interrupt()
                try:
                    await asyncio.wait_for(self.done.wait(), wait)
                    return
                except asyncio.TimeoutError:
                    pass
        finally:
            self._interrupting = None

    async def _code_started(self) -> Kernel | None:
        """Wait (bounded) until the kernel runs this run's code; its kernel, or None if the
        run ended first."""
        deadline = time.monotonic() + _CODE_START_WAIT_S
        if not await _first(deadline, self.started.wait(), self.done.wait()) or self.kernel is None:
            return None
        kernel = self.kernel
        await _first(deadline, kernel.running_code.wait(), self.done.wait())
        settle = kernel.running_since + _CODE_SETTLE_S - time.monotonic()
        if settle > 0:
            await asyncio.sleep(settle)
        return None if self.done.is_set() else kernel


async def _first(deadline: float, *waits: Any) -> bool:
    """Wait for the first of `waits` until `deadline`; False if none came in time."""
    tasks = {asyncio.ensure_future(w) for w in waits}
    try:
        done, _ = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
    return bool(done)
