"""REST endpoints: API info, health, one-shot execution."""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Request

from kernels.execution import execute

from . import __version__
from .frames import execution_frames, request_ids
from .models import ApiInfo, ExecuteRequest, ExecutionResult, Health
from .runtime import Runtime

log = logging.getLogger("gateway")
router = APIRouter()


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


@router.get("/", response_model=ApiInfo)
async def api_info() -> ApiInfo:
    return ApiInfo(
        name="icotes execution gateway",
        version=__version__,
        docs="/docs",
        endpoints={
            "GET /health": "status, connections, sessions, kernels",
            "POST /execute": "run code once in a fresh kernel",
            "WS /ws": "a session with a persistent kernel",
        },
    )


@router.get("/health", response_model=Health)
async def health(request: Request) -> Health:
    rt = runtime(request)
    return Health(
        connections=rt.connections,
        sessions=len(rt.sessions),
        kernels=rt.pool.stats(),
    )


@router.post("/execute", response_model=ExecutionResult, response_model_exclude_none=True)
async def execute_once(body: ExecuteRequest, request: Request) -> dict:
    """Run code in a fresh kernel that is thrown away afterwards."""
    rt = runtime(request)
    spec_name = rt.languages.spec_for(body.language)
    limits = rt.limits(body.timeout)
    started = time.monotonic()
    kernel = await rt.pool.acquire(spec_name)
    try:
        frames = execution_frames(execute(kernel, body.code, limits), request_ids(body.id, None), started)
        async for frame in frames:
            pass
    finally:
        rt.pool.release(kernel)
    log.info("one-shot %s: %s in %.3f s", spec_name, frame["status"], frame["execution_time"])
    return frame
