"""The wire: request bodies, client messages and server frames, as pydantic models."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Message(BaseModel):
    # Clients may send fields we do not use (the icotes REST client sends `file_path`).
    model_config = ConfigDict(extra="ignore")


class ExecuteRequest(_Message):
    """Body of `POST /execute`."""

    code: str = Field(description="source code to run")
    language: str | None = Field(None, description="language; the default when absent")
    timeout: float | None = Field(None, gt=0, description="wall-clock limit in seconds")
    id: str | None = Field(None, description="echoed in the result")
    session_id: str | None = Field(None, description="run in this session instead of a fresh kernel")
    stream: bool = Field(False, description="answer with NDJSON frames as they happen")


class SessionExecuteRequest(_Message):
    """Body of `POST /sessions/{id}/execute`."""

    code: str
    language: str | None = Field(None, description="run on the session's kernel of this language (started on first use); the session's own when absent")
    timeout: float | None = Field(None, gt=0)
    id: str | None = None
    stream: bool = False


class CreateSession(_Message):
    language: str | None = Field(None, description="language; the default when absent")


class KernelInfo(BaseModel):
    language: str
    kernel: str = Field(description="kernelspec name")
    language_version: str | None = None


class SessionInfo(BaseModel):
    id: str
    language: str = Field(description="the language the session was made with")
    kernel: str
    kernels: list[KernelInfo] = Field(description="every kernel of the session, one per language it has used")
    created: str
    last_activity: str
    execution_state: str
    connections: int


class ExecuteCode(_Message):
    """Client message `execute_code` (alias `execute`)."""

    code: str
    language: str | None = None
    timeout: float | None = Field(None, gt=0)
    id: str | None = None
    execution_id: str | None = None


class Restart(_Message):
    """Client message `restart`: every kernel of the session, or the one of `language`."""

    language: str | None = None


class Ack(_Message):
    """Client message `ack`: every frame up to `seq` arrived; the log may drop them."""

    seq: int = Field(ge=0)


class InputReply(_Message):
    value: str


class CodeAtCursor(_Message):
    """Client messages `complete` and `inspect`."""

    code: str
    cursor_pos: int | None = Field(None, ge=0, description="defaults to the end of code")
    language: str | None = Field(None, description="ask the session's kernel of this language")
    detail_level: int = Field(0, ge=0, le=1)


class ExecutionResult(BaseModel):
    """The last frame about an execution; also the body `POST /execute` returns."""

    type: Literal["execution_result"] = "execution_result"
    id: str | None = None
    execution_id: str | None = None
    status: Literal["ok", "error", "timeout", "interrupted", "died", "cancelled"]
    output: list[str] = Field(description="stdout, split into lines")
    errors: list[str] = Field(description="stderr lines and `Ename: evalue` of each error")
    execution_time: float = Field(description="seconds from submission to the end")
    execution_count: int | None = None
    outputs: list[dict[str, Any]] = Field(description="nbformat outputs, streams merged")
    reason: str | None = Field(None, description="why it did not end normally")

    def frame(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class ApiInfo(BaseModel):
    name: str
    version: str
    docs: str
    endpoints: dict[str, str]


class Health(BaseModel):
    status: Literal["healthy"] = "healthy"
    connections: int
    sessions: int
    kernels: dict[str, Any] = Field(description="ready (also per kernelspec), starting and in-use kernels")
    sandbox: dict[str, Any] = Field(description="the confinement in force for kernels")


class LanguageInfo(BaseModel):
    language: str
    kernel: str
    display_name: str
    default: bool
    provisioner: str = Field(description="what launches its kernels: the gateway's own confined provisioner, or the one the kernelspec names")
