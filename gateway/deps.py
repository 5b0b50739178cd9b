"""What routes are handed (FastAPI dependencies): the running parts, the session registry,
and who is asking."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from .access import principal_of
from .registry import SessionRegistry
from .runtime import Runtime


def runtime_of(conn: HTTPConnection) -> Runtime:
    return conn.app.state.runtime


def _registry(conn: HTTPConnection) -> SessionRegistry:
    return runtime_of(conn).sessions


def _owner(conn: HTTPConnection) -> str:
    return principal_of(conn)


RuntimeDep = Annotated[Runtime, Depends(runtime_of)]
Sessions = Annotated[SessionRegistry, Depends(_registry)]
Owner = Annotated[str, Depends(_owner)]
