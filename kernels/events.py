"""What one execution yields, in the order the kernel produced it."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from nbformat import NotebookNode


class ExecutionStatus(str, enum.Enum):
    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    INTERRUPTED = "interrupted"
    DIED = "died"
    CANCELLED = "cancelled"


@dataclass(slots=True)
class Output:
    """One nbformat output: stream, display_data, execute_result or error."""

    output: NotebookNode
    display_id: str | None = None


@dataclass(slots=True)
class ClearOutput:
    wait: bool


@dataclass(slots=True)
class UpdateDisplay:
    output: NotebookNode
    display_id: str


@dataclass(slots=True)
class InputRequest:
    prompt: str
    password: bool


@dataclass(slots=True)
class Status:
    """The kernel's execution state as it concerns this request (busy, idle)."""

    execution_state: str


@dataclass(slots=True)
class Finished:
    """Always the last event of an execution."""

    status: ExecutionStatus
    execution_count: int | None = None
    reason: str | None = None  # why it did not end normally, for the user to read
    # The kernel did not recover (died, or stayed busy past the time-out's grace period):
    # whoever owns it must restart it before it can run anything else.
    kernel_lost: bool = False
    # What it cost, for the operator's metrics: output bytes sent and dropped by the output
    # limit, and when the kernel was asked to run it (monotonic; None: it never ran).
    output_bytes: int = 0
    dropped_bytes: int = 0
    ran_from: float | None = None


Event = Output | ClearOutput | UpdateDisplay | InputRequest | Status | Finished


@dataclass(slots=True)
class SessionNotice:
    """Something about the session as a whole rather than one request.

    `state` is the session's new execution state (restarting, idle, dead); `message` says
    why, e.g. that the kernel was restarted and every variable is gone; `language` names
    the kernel it concerns, when it concerns one of the session's kernels.
    """

    state: str
    message: str | None = None
    state_lost: bool = False
    language: str | None = None
