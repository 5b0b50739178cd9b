"""REST endpoints: API info, health, one-shot execution."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from . import __version__
from .access import principal_of
from .deps import RuntimeDep, runtime_of
from .frames import request_ids
from .models import ApiInfo, ExecuteRequest, Health, LanguageInfo
from .playground import ROOT_FOR_BROWSERS, wants_html
from .protocol import ExecutionResult
from .sessions import run_in_session
from .streaming import respond, wants_stream

router = APIRouter()


@router.get("/", response_model=ApiInfo)
async def api_info(request: Request) -> Any:
    if wants_html(request.headers.get("accept", "")):
        return HTMLResponse(ROOT_FOR_BROWSERS)
    return ApiInfo(
        name="icotes execution gateway",
        version=__version__,
        docs="/docs",
        endpoints={
            "GET /health": "status, connections, sessions, kernels",
            "GET /languages": "languages available for `language`",
            "POST /execute": "run code once in a fresh kernel (or in a session: session_id)",
            "POST /sessions": "create a session with a persistent kernel",
            "GET /sessions": "list sessions",
            "POST /sessions/{id}/execute": "run code in a session",
            "WS /ws": "a session over a WebSocket (?session_id= attaches to one)",
            "GET|PUT|DELETE /sessions/{id}/files/{path}": "a session's files (GET /sessions/{id}/files lists them)",
            "POST /mcp": "the MCP endpoint (streamable HTTP) for AI agents",
            "GET /metrics": "Prometheus metrics",
            "GET /playground": "a page to run code in from a browser",
        },
    )


@router.get("/health", response_model=Health)
async def health(rt: RuntimeDep) -> Health:
    return Health(
        connections=rt.connections,
        sessions=len(rt.sessions),
        kernels=rt.pool.stats(),
        sandbox={**rt.sandbox.report(), "forked_kernels": rt.forks.report()},
        replica=rt.replicas.report() if rt.replicas is not None else None,
    )


@router.get("/languages", response_model=list[LanguageInfo])
async def languages(rt: RuntimeDep) -> list[LanguageInfo]:
    """The languages `language` may name, and the kernelspec each runs on."""
    langs = rt.languages
    return [
        LanguageInfo(
            language=name,
            kernel=spec,
            display_name=langs.kernelspecs[spec]["spec"].get("display_name", spec),
            default=name == langs.default,
            provisioner=langs.provisioner(spec),
        )
        for name, spec in sorted(langs.specs.items())
    ]


@router.post(
    "/execute",
    response_model=ExecutionResult,
    response_model_exclude_none=True,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
async def execute_once(body: ExecuteRequest, request: Request) -> Response:
    """Run code in a fresh kernel that is thrown away afterwards; `session_id` runs it in
    that session instead. `stream: true` (or `Accept: application/x-ndjson`) streams frames."""
    rt = runtime_of(request)
    stream = wants_stream(request, body.stream)
    if body.session_id is not None:
        return await run_in_session(request, body.session_id, body, stream)
    frames = rt.executions.one_shot(principal_of(request), body.code, body.language, body.timeout, request_ids(body.id, None))
    return await respond(frames, stream)
