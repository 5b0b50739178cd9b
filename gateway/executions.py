"""Running one execution, for every surface: WebSocket, REST, NDJSON, sessions over REST.

A surface hands over what its client asked; this checks it against the limits, queues it (on
a session's kernel, or on a one-shot kernel thrown away afterwards), and gives back its frames,
the last one its `execution_result`. It is the one place an execution's life passes through
in the gateway, so what is measured or traced about executions is added here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

from kernels.errors import ServiceDraining
from kernels.events import Event, Finished
from kernels.execution import ExecutionLimits, LimitsConfig, execute
from kernels.languages import Languages
from kernels.quotas import Quotas
from kernels.session import Session

from .frames import execution_frames
from .metrics import Metrics
from .tracing import Tracing, end_execution
from .protocol import ExecutionResult, Frame

log = logging.getLogger("gateway")


class Executions:
    def __init__(self, limits: LimitsConfig, languages: Languages, quotas: Quotas, metrics: Metrics, tracing: Tracing) -> None:
        self.limits = limits
        self.languages = languages
        self.quotas = quotas
        self.metrics = metrics
        self.tracing = tracing
        self.running = 0  # executions under way (a drain waits for them)
        self.draining: str | None = None  # why no one-shot starts now (drain.py)

    def in_session(
        self,
        session: Session,
        code: str,
        language: str | None,
        timeout: float | None,
        ids: dict[str, str],
        *,
        allow_stdin: bool,
        brief: bool = False,
        surface: str = "ws",
    ) -> AsyncIterator[Frame]:
        """Queue `code` behind whatever the session runs; refused at once (an error raised
        here, before any frame) if it breaks a limit. No `language`: the session's own."""
        limits = self.limits.for_request(code, timeout)
        spec_name = self.languages.spec_for(language) if language else None
        self.languages.check_code(spec_name or session.spec_name, code)
        run = session.submit(code, limits, allow_stdin=allow_stdin, spec_name=spec_name)
        return self._frames(run, ids, time.monotonic(), ("session", session.id), surface, brief)

    def one_shot(
        self, owner: str, code: str, language: str | None, timeout: float | None, ids: dict[str, str]
    ) -> AsyncIterator[Frame]:
        """Run `code` on a fresh kernel of the owner's share, thrown away afterwards."""
        if self.draining is not None:
            raise ServiceDraining(self.draining)
        limits = self.limits.for_request(code, timeout)
        spec_name = self.languages.spec_for(language)
        self.languages.check_code(spec_name, code)
        return self._one_shot(owner, spec_name, code, limits, ids)

    async def _one_shot(
        self, owner: str, spec_name: str, code: str, limits: ExecutionLimits, ids: dict[str, str]
    ) -> AsyncIterator[Frame]:
        started = time.monotonic()
        quota = self.quotas.of(owner)
        kernel = await quota.acquire(spec_name)
        try:
            # No stdin: input() raises at once instead of waiting for an answer nobody can give.
            events = execute(kernel, code, limits, allow_stdin=False)
            async for frame in self._frames(events, ids, started, ("one-shot", spec_name), "rest"):
                yield frame
        finally:
            # Thrown away, never reused; a client that left mid-stream also ends up here.
            quota.release(kernel)

    async def _frames(
        self, events: AsyncIterator[Event], ids: dict[str, str], started: float, where: tuple[str, str], surface: str, brief: bool = False
    ) -> AsyncIterator[Frame]:
        frame: Frame | None = None
        finished: list[Finished] = []
        self.running += 1
        span = self.tracing.execution(surface, where, started)
        try:
            async for frame in execution_frames(_keeping_end(events, finished), ids, started, brief):
                yield frame
        finally:
            self.running -= 1
            status = frame.status if isinstance(frame, ExecutionResult) else "abandoned"
            elapsed = time.monotonic() - started
            end = finished[0] if finished else None
            self.metrics.executed(surface, status, elapsed, end, started)
            if span is not None:
                ran = end.ran_from - started if end is not None and end.ran_from is not None else None
                end_execution(span, status, elapsed, ran, end.output_bytes if end else 0, end.dropped_bytes if end else 0)
            # "session %s: ..." (logs.py lifts the id out of such lines)
            log.info(f"{where[0]} %s: execution %s in %.3f s", where[1], status, elapsed)


async def _keeping_end(events: AsyncIterator[Event], end: list[Finished]) -> AsyncIterator[Event]:
    """`events`, the last one (`Finished`, with what the execution cost) kept in `end`."""
    async for event in events:
        if isinstance(event, Finished):
            end.append(event)
        yield event
