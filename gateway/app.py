"""The FastAPI application: routes, CORS, error translation, start-up and shut-down."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__, files, jupyter, jupyter_sessions, mcp, playground, rest, sessions, ws
from .access import AccessMiddleware
from .forwarding import Forwarding
from .drain import Drain
from .errors import HANDLED, http_error, http_exception
from .json_bodies import JSONBodies
from .logs import RequestIds
from .tracing import TraceParents
from .metrics import Metrics, metrics_endpoint
from .jupyter_fanout import JupyterClients, Limits
from .runtime import Runtime
from .settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(settings, metrics)
        app.state.runtime = runtime
        app.state.drain = Drain(runtime, settings.drain_timeout_s)
        app.state.notebook_sessions = jupyter_sessions.NotebookSessions(runtime.replicas.store if runtime.replicas else None)
        app.state.jupyter_clients = JupyterClients(Limits(
            kernel_bytes=settings.jupyter_queue_bytes, gateway_bytes=settings.jupyter_gateway_queue_bytes,
            sockets_per_kernel=settings.jupyter_sockets_per_kernel, sockets_per_client=settings.jupyter_sockets_per_client,
            output_bytes=settings.output_limit,
        ))
        await runtime.start()
        try:
            async with mcp_running():
                yield
        finally:
            await runtime.stop()

    metrics = Metrics()
    app = FastAPI(title="icotes execution gateway", version=__version__, lifespan=lifespan)
    app.state.metrics = metrics
    app.add_middleware(JSONBodies)
    # Inside the access checks: a session held by another replica is served there.
    app.add_middleware(Forwarding)
    # Nothing runs, no kernel starts, before the token and the origin are checked...
    app.add_middleware(AccessMiddleware, settings=settings, metrics=metrics)
    # ...and CORS wraps it, so a browser can read a 401 too.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["*"],
        allow_headers=["*"],
    )
    if settings.otlp_endpoint:
        app.add_middleware(TraceParents)  # the caller's traceparent, for its executions' spans
    app.add_middleware(RequestIds)  # outermost: every line logged about a request carries its id
    app.add_route("/metrics", metrics_endpoint, include_in_schema=False)
    app.include_router(rest.router)
    app.include_router(playground.router)
    app.include_router(sessions.router)
    app.include_router(files.router)
    app.include_router(ws.router)
    app.include_router(jupyter.router)
    app.include_router(jupyter_sessions.router)
    mcp_running = mcp.mount(app, settings) if settings.mcp_enabled else nullcontext
    for kind in HANDLED:
        app.add_exception_handler(kind, http_error)
    app.add_exception_handler(StarletteHTTPException, http_exception)
    return app
