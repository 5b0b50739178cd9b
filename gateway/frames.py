"""Kernel events as wire frames (protocol.py): the same JSON over WebSocket and NDJSON."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from kernels.events import (
    ClearOutput,
    Event,
    ExecutionStatus,
    Finished,
    InputRequest,
    Output,
    SessionNotice,
    Status,
    UpdateDisplay,
)
from kernels.outputs import OutputCollector

from .protocol import (
    ClearOutputFrame,
    ExecutionResult,
    Frame,
    InputRequestFrame,
    OutputFrame,
    StatusFrame,
    UpdateDisplayFrame,
)


def request_ids(id: str | None, execution_id: str | None) -> dict[str, str]:
    """The id fields echoed on every frame about a request, under the names the client used."""
    ids: dict[str, str] = {}
    if id is not None or execution_id is not None:
        ids["id"] = id if id is not None else execution_id  # type: ignore[assignment]
    if execution_id is not None:
        ids["execution_id"] = execution_id
    return ids


def event_frame(event: Event, ids: dict[str, str]) -> Frame:
    if isinstance(event, Output):
        return OutputFrame(**ids, output=event.output, display_id=event.display_id)
    if isinstance(event, Status):
        return StatusFrame(**ids, execution_state=event.execution_state)
    if isinstance(event, ClearOutput):
        return ClearOutputFrame(**ids, wait=event.wait)
    if isinstance(event, UpdateDisplay):
        return UpdateDisplayFrame(**ids, output=event.output, display_id=event.display_id)
    if isinstance(event, InputRequest):
        return InputRequestFrame(**ids, prompt=event.prompt, password=event.password)
    raise TypeError(f"no frame for {event!r}")


def notice_frame(notice: SessionNotice) -> Frame:
    return StatusFrame(
        execution_state=notice.state,
        message=notice.message or None,
        state_lost=True if notice.state_lost else None,
        language=notice.language or None,
    )


async def execution_frames(
    events: AsyncIterator[Event], ids: dict[str, str], started: float | None = None, brief: bool = False
) -> AsyncIterator[Frame]:
    """Every frame of one execution; the last is its `execution_result` (`brief`: without
    the outputs the frames before it carried)."""
    started = time.monotonic() if started is None else started
    collector = OutputCollector()
    async for event in events:
        if isinstance(event, Finished):
            yield result(event, collector, ids, time.monotonic() - started, brief)
            return
        collector.apply(event)
        yield event_frame(event, ids)


def refused_result(reason: str, ids: dict[str, str]) -> Frame:
    """The result of an execution that never ran: bad input, no kernel to run it on."""
    return ExecutionResult(
        **ids, status="error", output=[], errors=[f"Error: {reason}"], execution_time=0.0, outputs=[], reason=reason
    )


def result(
    finished: Finished, collector: OutputCollector, ids: dict[str, str], elapsed: float, brief: bool = False
) -> ExecutionResult:
    errors = collector.error_lines()
    # An error's own traceback says it all; the other endings say why in their reason.
    if finished.reason and (finished.status is not ExecutionStatus.ERROR or not errors):
        errors.append(f"{finished.status.value.capitalize()}: {finished.reason}")
    return ExecutionResult(
        **ids,
        status=finished.status.value,
        output=None if brief else collector.stdout_lines(),
        errors=errors,
        execution_time=round(elapsed, 6),
        execution_count=finished.execution_count,
        outputs=None if brief else collector.outputs,
        reason=finished.reason,
    )
