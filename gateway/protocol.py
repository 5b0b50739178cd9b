"""The `/ws` protocol: every client message and every server frame, as a pydantic model.

Server frames are also what NDJSON streams carry, and `ExecutionResult` is the body
`POST /execute` answers with. `GET /ws/schema` publishes this module as JSON Schema.
Every frame a session publishes gets a `seq` (its place in the session's log).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic_core import PydanticSerializationError

# -- client messages ---------------------------------------------------------------------------


class _Message(BaseModel):
    # Clients may send fields we do not use (the icotes REST client sends `file_path`).
    model_config = ConfigDict(extra="ignore")
    id: Any = Field(None, description="echoed, as a string, on every frame about this message")
    execution_id: Any = Field(None, description="another name for `id` (the icotes client's); echoed too")


class ExecuteCode(_Message):
    """Run code in the session, after whatever it runs; answered by frames ending in an
    `execution_result`."""

    type: Literal["execute_code", "execute"]
    code: str
    language: str | None = Field(None, description="run on the session's kernel of this language; the session's own when absent")
    timeout: float | None = Field(None, gt=0, description="wall-clock limit in seconds")
    result: Literal["full", "brief"] = Field(
        "full", description="brief: the execution_result leaves out `output` and `outputs`, which the output frames carried already",
    )
    id: str | None = None
    execution_id: str | None = None


class Interrupt(_Message):
    """Interrupt what runs (or, if nothing does yet, the next queued run)."""

    type: Literal["interrupt"]


class Restart(_Message):
    """Restart every kernel of the session, or the one of `language`; their state is lost."""

    type: Literal["restart"]
    language: str | None = None


class InputReply(_Message):
    """The answer to an `input_request`."""

    type: Literal["input_reply"]
    value: str


class CodeAtCursor(_Message):
    """Completions (`complete`) or help (`inspect`) for the code at a cursor."""

    type: Literal["complete", "inspect"]
    code: str
    cursor_pos: int | None = Field(None, ge=0, description="defaults to the end of code")
    language: str | None = Field(None, description="ask the session's kernel of this language")
    detail_level: int = Field(0, ge=0, le=1)


class Ack(_Message):
    """Every frame up to `seq` arrived: the session's log need not keep them for a replay."""

    type: Literal["ack"]
    seq: int = Field(ge=0)


class Ping(_Message):
    """Answered by a `pong`."""

    type: Literal["ping"]


class CloseSession(_Message):
    """End the session and its kernels."""

    type: Literal["close_session"]


ClientMessage = Annotated[
    Union[ExecuteCode, Interrupt, Restart, InputReply, CodeAtCursor, Ack, Ping, CloseSession],
    Field(discriminator="type"),
]


# -- server frames -----------------------------------------------------------------------------


class _Frame(BaseModel):
    seq: int | None = Field(None, description="the frame's place in the session's log (not on NDJSON)")
    id: str | None = Field(None, description="the `id` of the message this frame is about")
    execution_id: str | None = None

    def frame(self) -> dict[str, Any]:
        """As it goes on the wire: absent fields are left out."""
        return self.model_dump(exclude_none=True)

    def numbered(self, seq: int) -> str:
        """The frame's JSON with its `seq`, as a session publishes it.

        Written by pydantic at about a quarter of `json.dumps(frame())`'s cost. Text that
        UTF-8 cannot carry (a lone surrogate a kernel's message escaped) goes through json,
        which escapes it again; so does a frame that shapes its own dict, or has a seq.
        """
        if type(self).frame is _Frame.frame and self.seq is None:
            try:
                body = self.model_dump_json(exclude_none=True)
            except PydanticSerializationError:
                pass
            else:
                return f'{{"seq":{seq},{body[1:]}'  # every frame has a `type`: never "{}"
        return json.dumps({**self.frame(), "seq": seq})


class LostRange(BaseModel):
    from_seq: int
    to_seq: int


class SessionFrame(_Frame):
    """The first frame on every socket: the session it is attached to."""

    type: Literal["session"] = "session"
    session_id: str
    kernel: str = Field(description="the session's own kernelspec")
    language: str
    language_version: str | None
    kernels: list[dict[str, Any]] = Field(description="every kernel of the session (language, kernel, language_version: models.KernelInfo), one per language used")
    execution_state: str
    resumed: bool = Field(description="attached to an existing session (?session_id=)")
    last_seq: int = Field(description="the seq of the newest frame so far")
    replayed: int = Field(description="frames replayed after this one, from the client's last_seq")
    lost: LostRange | None = Field(None, description="seqs the log's bound dropped before they could be replayed")

    def frame(self) -> dict[str, Any]:
        frame = super().frame()
        frame.setdefault("language_version", None)  # null, not absent, when the kernel did not say
        return frame


class OutputFrame(_Frame):
    """One nbformat output (stream text arrives coalesced)."""

    type: Literal["output"] = "output"
    output: dict[str, Any]
    display_id: str | None = Field(None, description="the display this output is, for later `update_display_data` frames")


class StatusFrame(_Frame):
    """With an `id`: that request's kernel is busy or idle. Without: the session's state
    (`restarting`, `idle` after it, ...), with why in `message`."""

    type: Literal["status"] = "status"
    execution_state: str
    message: str | None = None
    state_lost: bool | None = Field(None, description="true when a kernel's state was lost (a restart, a death)")
    language: str | None = Field(None, description="the language whose kernel it is about")
    lost: LostRange | None = Field(None, description="seqs that will never be sent: the session moved between gateway replicas and the old one may have sent them, or not")


class ClearOutputFrame(_Frame):
    type: Literal["clear_output"] = "clear_output"
    wait: bool


class UpdateDisplayFrame(_Frame):
    type: Literal["update_display_data"] = "update_display_data"
    output: dict[str, Any]
    display_id: str


class InputRequestFrame(_Frame):
    """The running code called `input()`: answer with an `input_reply`."""

    type: Literal["input_request"] = "input_request"
    prompt: str
    password: bool


class ExecutionResult(_Frame):
    """The last frame about an execution; also the body `POST /execute` returns."""

    type: Literal["execution_result"] = "execution_result"
    status: Literal["ok", "error", "timeout", "interrupted", "died", "cancelled"]
    output: list[str] | None = Field(None, description="stdout, split into lines (absent in a brief result)")
    errors: list[str] = Field(description="stderr lines and `Ename: evalue` of each error")
    execution_time: float = Field(description="seconds from submission to the end")
    execution_count: int | None = None
    outputs: list[dict[str, Any]] | None = Field(None, description="nbformat outputs, streams merged (absent in a brief result)")
    reason: str | None = Field(None, description="why it did not end normally")


class ErrorFrame(_Frame):
    """A message was refused, or work it started failed; `message` says why."""

    type: Literal["error"] = "error"
    message: str


class PongFrame(_Frame):
    type: Literal["pong"] = "pong"


class CompletionFrame(_Frame):
    type: Literal["completion"] = "completion"
    matches: list[str]
    cursor_start: int
    cursor_end: int
    metadata: dict[str, Any]


class InspectionFrame(_Frame):
    type: Literal["inspection"] = "inspection"
    found: bool
    data: dict[str, Any]
    metadata: dict[str, Any]


ServerFrame = Annotated[
    Union[
        SessionFrame, OutputFrame, StatusFrame, ClearOutputFrame, UpdateDisplayFrame, InputRequestFrame,
        ExecutionResult, ErrorFrame, PongFrame, CompletionFrame, InspectionFrame,
    ],
    Field(discriminator="type"),
]

Frame = _Frame  # any server frame


def json_schema() -> dict[str, Any]:
    """The protocol as JSON Schema: what clients send, and what the server sends."""
    return {
        "client_messages": TypeAdapter(ClientMessage).json_schema(),
        "server_frames": TypeAdapter(ServerFrame).json_schema(),
    }
