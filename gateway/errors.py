"""Each error of the core maps to one HTTP status and one WebSocket close code, here; the
close codes of every socket are named here too."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kernels.errors import (
    CapacityExceeded,
    ClientQuotaExceeded,
    CodeTooLarge,
    FileConflict,
    FileNotFound,
    FileRefused,
    GatewayError,
    InvalidRequest,
    KernelBusyTimeout,
    KernelDied,
    KernelStartFailed,
    NoFileChannel,
    NoKernelForLanguage,
    NotWaitingForInput,
    SessionClosed,
    SessionLost,
    SessionMoving,
    ServiceDraining,
    SessionNotFound,
    StorageFull,
    TimeoutTooLarge,
    TooManySockets,
    UnknownKernelspec,
    UnknownLanguage,
)

WS_NORMAL = 1000  # the session was closed
WS_INTERNAL_ERROR = 1011
# WebSocket close codes of our own (4000-4999 are the application's).
WS_BAD_REQUEST = 4400
WS_UNAUTHORIZED = 4401
WS_FORBIDDEN = 4403  # a browser's Host or Origin not allowed
WS_NO_SESSION = 4404
WS_TAKEN_OVER = 4409
WS_SESSION_LOST = 4410
WS_TRY_AGAIN_LATER = 1013  # the standard "try again later"
WS_SERVICE_RESTART = 1012  # the standard "service restart": the gateway is draining

RETRY_AFTER_S = 5


# Subclasses before their bases: the first match wins.
_STATUS: dict[type[Exception], tuple[int, int]] = {
    UnknownLanguage: (400, WS_BAD_REQUEST),
    TimeoutTooLarge: (422, WS_BAD_REQUEST),
    CodeTooLarge: (413, WS_BAD_REQUEST),
    InvalidRequest: (400, WS_BAD_REQUEST),
    UnknownKernelspec: (404, WS_BAD_REQUEST),
    SessionNotFound: (404, WS_NO_SESSION),
    SessionClosed: (409, WS_NO_SESSION),
    SessionLost: (410, WS_SESSION_LOST),
    SessionMoving: (503, WS_TRY_AGAIN_LATER),
    NoKernelForLanguage: (409, WS_BAD_REQUEST),
    KernelDied: (409, WS_TRY_AGAIN_LATER),
    CapacityExceeded: (503, WS_TRY_AGAIN_LATER),
    ServiceDraining: (503, WS_TRY_AGAIN_LATER),
    ClientQuotaExceeded: (429, WS_TRY_AGAIN_LATER),
    KernelStartFailed: (503, WS_TRY_AGAIN_LATER),
    KernelBusyTimeout: (504, WS_TRY_AGAIN_LATER),
    NotWaitingForInput: (409, WS_BAD_REQUEST),
    TooManySockets: (503, WS_TRY_AGAIN_LATER),
    FileNotFound: (404, WS_BAD_REQUEST),
    FileRefused: (403, WS_BAD_REQUEST),
    FileConflict: (409, WS_BAD_REQUEST),
    StorageFull: (413, WS_BAD_REQUEST),
    NoFileChannel: (409, WS_BAD_REQUEST),
}

# Registered as FastAPI's exception handlers (every GatewayError, new kinds included).
HANDLED = (GatewayError,)


def _codes(exc: Exception) -> tuple[int, int]:
    return next((codes for kind, codes in _STATUS.items() if isinstance(exc, kind)), (500, WS_INTERNAL_ERROR))


def close_code(exc: Exception) -> int:
    return _codes(exc)[1]


def http_status(exc: Exception) -> int:
    return _codes(exc)[0]


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    status = _codes(exc)[0]
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status in (429, 503) else None
    return JSONResponse(error_body(request.url.path, status, str(exc)), status_code=status, headers=headers)


async def http_exception(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """FastAPI's own answer, with the Jupyter fields where Jupyter clients ask."""
    return JSONResponse(error_body(request.url.path, exc.status_code, exc.detail), status_code=exc.status_code, headers=exc.headers)


def error_body(path: str, status: int, detail: Any) -> dict[str, Any]:
    """`detail`, and under /api also `message` and `reason`: what jupyter_server's gateway
    client shows its user (it would say only that the gateway failed)."""
    body: dict[str, Any] = {"detail": detail}
    if path.startswith("/api/") and isinstance(detail, str):
        body.update(message=detail, reason=HTTPStatus(status).phrase)
    return body
