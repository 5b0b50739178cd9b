"""The REST API's request bodies and answers, as pydantic models (the `/ws` protocol's
messages and frames are in protocol.py)."""

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
    replica: dict[str, Any] | None = Field(None, description="with a shared store: this replica's id, and whether its last heartbeat reached the store")


class LanguageInfo(BaseModel):
    language: str
    kernel: str
    display_name: str
    default: bool
    provisioner: str = Field(description="what launches its kernels: the gateway's own confined provisioner, or the one the kernelspec names")
