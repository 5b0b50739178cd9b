"""Running one piece of code on a kernel: the events of that one request, every wait bounded."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from nbformat.v4 import new_output
from pydantic import BaseModel, Field

from .errors import CodeTooLarge, TimeoutTooLarge

from .events import Event, ExecutionStatus, Finished, InputRequest, Output, Status
from .kernel import DIED, Kernel
from .message_codec import check_unicode
from .outputs import event_from_iopub

log = logging.getLogger(__name__)


# The kernel's `idle` comes on iopub, its replies on shell: once the fence's reply has come,
# how long `idle` may still take (iopub drops messages past its high-water mark).
_REPLY_GRACE = 2.0
# Once `idle` has come, how long to wait for the fence before sending it again.
_FENCE_GRACE = 2.0
# A kernel that says nothing at all about a request for this long is reported in the log.
_SILENT_S = 10.0


class _Fence:
    """A small shell request (`comm_info_request`) sent right behind the execute_request.

    The kernel handles shell requests one after the other, so it answers this one only once
    the request's code has ended, and on the same socket as, and after, the request's own
    reply. Code in the kernel holds the key and can forge its request's `idle` and reply
    while it runs on (to end its run early, past its time-out); it cannot answer for the
    fence without rewriting ipykernel's own dispatch. A fence that an interrupt made the
    kernel drop (see `_finished`) is sent again.
    """

    def __init__(self, kernel: Kernel, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self.kernel = kernel
        self.queue = queue
        self.ids: list[str] = []
        self.passed = False
        self.resend_at = float("inf")

    def message(self) -> dict[str, Any]:
        """A new fence, its replies routed to the execution's queue; the caller sends it."""
        # comm_info for a target nobody has: the smallest reply a kernel sends
        msg = self.kernel.client.session.msg("comm_info_request", {"target_name": "icotes.fence"})
        self.ids.append(msg["header"]["msg_id"])
        self.kernel.subscribe(self.ids[-1], self.queue)
        self.kernel.quiet(self.ids[-1])  # its busy and idle say nothing; its reply does
        self.resend_at = time.monotonic() + _FENCE_GRACE
        return msg

    def resend(self) -> None:
        self.kernel.send("shell", self.message())

    def owns(self, msg: dict[str, Any]) -> bool:
        return msg.get("parent_header", {}).get("msg_id") in self.ids

    def close(self) -> None:
        for msg_id in self.ids:
            self.kernel.unsubscribe(msg_id)


class LimitsConfig(BaseModel):
    """The execution settings: their one set of names, defaults and descriptions (the
    gateway's Settings include these fields as they are)."""

    default_timeout: float = Field(300.0, gt=0, description="execution time-out in seconds when a request gives none")
    max_timeout: float = Field(3600.0, gt=0, description="largest time-out a request may ask for")
    interrupt_grace: float = Field(3.0, gt=0, description="seconds after a time-out's interrupt before the kernel is restarted")
    output_limit: int = Field(10_000_000, gt=0, description="bytes of output per execution; the rest is dropped and counted")
    stream_window_ms: float = Field(15.0, ge=0, description="stream output is coalesced into one frame per this many ms")
    stream_max_bytes: int = Field(65536, gt=0, description="...or per this many bytes")
    max_code_bytes: int = Field(1 * 2**20, gt=0, description="largest piece of code")

    def for_request(self, code: str, timeout: float | None) -> ExecutionLimits:
        """The limits of one execution of `code` asking for `timeout`; refused past them."""
        if len(code) > self.max_code_bytes:
            raise CodeTooLarge(f"code of {len(code)} bytes is above max_code_bytes ({self.max_code_bytes})")
        check_unicode(code, "code")
        if timeout is not None and timeout > self.max_timeout:
            raise TimeoutTooLarge(f"timeout {timeout:g} s is above max_timeout ({self.max_timeout:g} s)")
        return ExecutionLimits(
            timeout=timeout or self.default_timeout,
            interrupt_grace=self.interrupt_grace,
            output_limit=self.output_limit,
            stream_window=self.stream_window_ms / 1000,
            stream_max_bytes=self.stream_max_bytes,
        )


@dataclass
class ExecutionLimits:
    timeout: float  # wall clock, seconds
    interrupt_grace: float  # after the time-out's interrupt, before giving the kernel up
    output_limit: int  # bytes of output sent per execution; the rest is counted
    stream_window: float  # coalesce stream output into one event per window (seconds)...
    stream_max_bytes: int  # ...or per this many bytes, whichever comes first


async def execute(
    kernel: Kernel, code: str, limits: ExecutionLimits, *, allow_stdin: bool = False
) -> AsyncIterator[Event]:
    """Yield the events of one execute_request; the last one is always `Finished`.

    It ends when iopub's `status: idle` and the reply of the fence sent behind the request
    (see `_Fence`) have arrived (the execute_reply comes before the fence's, or was dropped),
    or the fence's reply and not `idle` within `_REPLY_GRACE`; when the kernel dies; or when
    the time-out's interrupt grace period runs out.
    """
    run = _Execution(kernel, limits)
    ran_from = time.monotonic()
    async for event in run.events(code, allow_stdin):
        if isinstance(event, Finished):
            event.output_bytes, event.dropped_bytes, event.ran_from = run.sent_bytes, run.dropped_bytes, ran_from
        yield event


class _Execution:
    def __init__(self, kernel: Kernel, limits: ExecutionLimits) -> None:
        self.kernel = kernel
        self.limits = limits
        self.pending: Output | None = None  # stream output held back to coalesce...
        self.pieces: list[str] = []  # ...its text, joined once when it goes out
        self.pending_size = 0
        self.last_flush = float("-inf")
        self.sent_bytes = 0
        self.dropped_bytes = 0
        self.timed_out = False
        self.interrupts_before = kernel.interrupts

    async def events(self, code: str, allow_stdin: bool) -> AsyncIterator[Event]:
        content = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": allow_stdin,
            # Each request is its own cell: an error must not abort the ones queued after it.
            "stop_on_error": False,
        }
        msg = self.kernel.client.session.msg("execute_request", content)
        msg_id = msg["header"]["msg_id"]
        queue = self.kernel.subscribe(msg_id)
        fence = _Fence(self.kernel, queue)
        try:
            self.kernel.send("shell", msg, fence.message())  # in one wake-up of zmq's I/O thread
            async for event in self._read(queue, fence):
                yield event
        finally:
            self.kernel.unsubscribe(msg_id)
            fence.close()

    async def _read(self, queue: asyncio.Queue[dict[str, Any]], fence: _Fence) -> AsyncIterator[Event]:
        deadline = time.monotonic() + self.limits.timeout
        reply: dict[str, Any] | None = None
        idle = False
        settle_at = float("inf")  # the fence has passed: how long `idle` may still take
        silent_at = time.monotonic() + _SILENT_S  # nothing at all from the kernel by then: say so
        while not (idle and fence.passed):
            msg = await self._next(queue, min(deadline, settle_at, fence.resend_at if idle else deadline, silent_at))
            if msg is None:  # the held-back stream's window passed, or a deadline did
                now = time.monotonic()
                if self.pending is not None and self._window_passed():
                    yield self._flush()
                elif now >= silent_at:
                    silent_at = float("inf")
                    self._report_silence()
                elif now >= settle_at:  # iopub dropped `idle`: the fence says it is over
                    break
                elif idle and now >= fence.resend_at:
                    fence.resend()  # an interrupt can make the kernel drop it; if not, the code runs on
                elif now >= deadline:
                    if self.timed_out:
                        for event in self._closing():
                            yield event
                        yield self._given_up()
                        return
                    self.timed_out = True
                    await self.kernel.interrupt()
                    deadline = time.monotonic() + self.limits.interrupt_grace
                continue
            silent_at = float("inf")
            if msg is DIED:
                for event in self._closing():
                    yield event
                yield Finished(ExecutionStatus.DIED, None, self._death_reason(), kernel_lost=True)
                return
            if fence.owns(msg):
                if msg["channel"] == "shell":
                    fence.passed = True
                    settle_at = time.monotonic() + _REPLY_GRACE
                continue
            channel = msg["channel"]
            if channel == "shell":
                reply = msg["content"]
            elif channel == "stdin":
                if msg["msg_type"] == "input_request":
                    for event in self._flush_all():
                        yield event
                    c = msg["content"]
                    yield InputRequest(c.get("prompt", ""), bool(c.get("password", False)))
            elif msg["msg_type"] == "status":
                state = msg["content"].get("execution_state")
                idle = idle or state == "idle"
                if state == "idle":
                    for event in self._flush_all():
                        yield event
                yield Status(state)
            else:
                for event in self._on_output(msg, queue):
                    yield event
        for event in self._closing():
            yield event
        yield self._finished(reply)

    async def _next(
        self, queue: asyncio.Queue[dict[str, Any]], deadline: float
    ) -> dict[str, Any] | None:
        """The next message, or None when a deadline (stream window or time-out) came first."""
        try:
            return queue.get_nowait()
        except asyncio.QueueEmpty:
            pass
        wake = deadline
        if self.pending is not None:
            wake = min(wake, self.last_flush + self.limits.stream_window)
        remaining = wake - time.monotonic()
        if remaining <= 0:
            return None
        try:
            # asyncio.timeout, not wait_for: no extra task per message on the hot path
            async with asyncio.timeout(remaining):
                return await queue.get()
        except TimeoutError:
            return None

    def _on_output(self, msg: dict[str, Any], queue: asyncio.Queue[Any]) -> list[Event]:
        event = event_from_iopub(msg)
        if event is None:
            return []
        if not isinstance(event, Output) or event.output["output_type"] != "stream":
            return [*self._flush_all(), *self._capped(event)]
        ready: list[Event] = []
        if self.pending is not None and self.pending.output["name"] != event.output["name"]:
            ready.append(self._flush())
        for capped in self._capped(event):
            if self.pending is None:
                self.pending = capped
            self.pieces.append(capped.output["text"])
            self.pending_size += len(capped.output["text"])
        # Leading edge: a lone print goes out at once; a burst is merged until the window ends.
        if self.pending is not None and (
            self.pending_size >= self.limits.stream_max_bytes
            or (queue.empty() and self._window_passed())
        ):
            ready.append(self._flush())
        return ready

    def _capped(self, event: Event) -> list[Event]:
        """The event as far as the output limit allows; errors always pass."""
        if not isinstance(event, Output) or event.output["output_type"] == "error":
            return [event]
        size = _output_size(event.output)
        room = self.limits.output_limit - self.sent_bytes
        if size <= room:
            self.sent_bytes += size
            return [event]
        if event.output["output_type"] == "stream" and room > 0:
            text = event.output["text"]
            event.output["text"] = text[:room]
            self.sent_bytes += room
            self.dropped_bytes += size - room
            return [event]
        self.dropped_bytes += size
        return []

    def _window_passed(self) -> bool:
        return time.monotonic() - self.last_flush >= self.limits.stream_window

    def _flush(self) -> Output:
        event, self.pending = self.pending, None
        if len(self.pieces) > 1:
            event.output["text"] = "".join(self.pieces)
        self.pieces, self.pending_size = [], 0
        self.last_flush = time.monotonic()
        return event

    def _flush_all(self) -> list[Event]:
        return [self._flush()] if self.pending is not None else []

    def _closing(self) -> list[Event]:
        """What is still held back, and the notice of what the output limit dropped."""
        events = self._flush_all()
        if not self.dropped_bytes:
            return events
        text = (
            f"[output limit of {self.limits.output_limit} bytes reached: "
            f"{self.dropped_bytes} bytes dropped]\n"
        )
        return [*events, Output(new_output("stream", name="stderr", text=text))]

    def _finished(self, reply: dict[str, Any] | None) -> Finished:
        count = reply.get("execution_count") if reply is not None else None
        if self.timed_out:
            reason = f"execution exceeded its time-out of {self.limits.timeout:g} s and was interrupted"
            return Finished(ExecutionStatus.TIMEOUT, count, reason)
        if reply is None:
            # Idle came and the reply never did. ipykernel drops the reply when a
            # KeyboardInterrupt reaches it outside the user's code, as a second interrupt
            # landing while it still handles the first one does.
            if self.kernel.interrupts != self.interrupts_before:
                return Finished(ExecutionStatus.INTERRUPTED, None, "interrupted")
            return Finished(ExecutionStatus.ERROR, None, "the kernel ended this request without replying to it")
        status = reply.get("status")
        if status == "ok":
            return Finished(ExecutionStatus.OK, count)
        if status == "error" and reply.get("ename") == "KeyboardInterrupt":
            return Finished(ExecutionStatus.INTERRUPTED, count, "interrupted")
        if status == "aborted":
            return Finished(ExecutionStatus.CANCELLED, count, "the kernel aborted this request")
        return Finished(ExecutionStatus.ERROR, count)

    def _report_silence(self) -> None:
        """For the operator: a kernel that has not even said `busy` is stuck before the
        user's code (the time-out still ends the run)."""
        log.warning(
            "kernel %s has sent nothing for %g s about a request (alive: %s; %s)",
            self.kernel.name, _SILENT_S, not self.kernel.is_dead, self.kernel.diagnostics(),
        )

    def _given_up(self) -> Finished:
        reason = (
            f"execution exceeded its time-out of {self.limits.timeout:g} s and did not stop "
            f"within {self.limits.interrupt_grace:g} s of an interrupt; the kernel must restart"
        )
        return Finished(ExecutionStatus.TIMEOUT, None, reason, kernel_lost=True)

    def _death_reason(self) -> str:
        return f"the kernel died: {self.kernel.exit_reason or 'unknown cause'}"


def _output_size(output: dict[str, Any]) -> int:
    if output["output_type"] == "stream":
        return len(output["text"])
    return sum(len(v) if isinstance(v, str) else len(str(v)) for v in output["data"].values())
