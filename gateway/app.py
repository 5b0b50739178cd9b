"""The FastAPI application: routes, CORS, error translation, start-up and shut-down."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from kernels.errors import (
    KernelBusyTimeout,
    KernelDied,
    KernelError,
    KernelStartFailed,
    SessionClosed,
    SessionNotFound,
    UnknownLanguage,
)

from . import __version__, rest, sessions, ws
from .runtime import Runtime, TimeoutTooLarge
from .settings import Settings

# Each kernel-layer error maps to one HTTP status, here and nowhere else.
_STATUS = {
    UnknownLanguage: 400,
    TimeoutTooLarge: 422,
    SessionNotFound: 404,
    SessionClosed: 409,
    KernelDied: 409,
    KernelStartFailed: 503,
    KernelBusyTimeout: 504,
}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(settings)
        app.state.runtime = runtime
        runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(title="icotes execution gateway", version=__version__, lifespan=lifespan)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["*"],
        allow_headers=["*"],
    )
    app.include_router(rest.router)
    app.include_router(sessions.router)
    app.include_router(ws.router)

    async def translate(request: Request, exc: Exception) -> JSONResponse:
        status = next((code for kind, code in _STATUS.items() if isinstance(exc, kind)), 500)
        return JSONResponse({"detail": str(exc)}, status_code=status)

    for kind in (KernelError, TimeoutTooLarge):
        app.add_exception_handler(kind, translate)
    return app
