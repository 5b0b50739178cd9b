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


# The dependencies are coroutines though they never wait: FastAPI runs a plain function
# dependency in a worker thread, a hop that cost every request ~0.7 ms here.
async def _runtime(conn: HTTPConnection) -> Runtime:
    return runtime_of(conn)


async def _registry(conn: HTTPConnection) -> SessionRegistry:
    return runtime_of(conn).sessions


async def _owner(conn: HTTPConnection) -> str:
    return principal_of(conn)


RuntimeDep = Annotated[Runtime, Depends(_runtime)]
Sessions = Annotated[SessionRegistry, Depends(_registry)]
Owner = Annotated[str, Depends(_owner)]
