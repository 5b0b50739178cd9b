"""OpenTelemetry traces, when `GATEWAY_OTLP_ENDPOINT` is set: a span per execution (its queue
wait, kernel run, output bytes and status, never its code), a child of the caller's W3C
`traceparent` on REST requests and WebSocket handshakes, exported over OTLP/HTTP.

Off (the default), nothing of it is on the execute path: no middleware, no span, one `if`.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from starlette.types import ASGIApp, Receive, Scope, Send

from . import __version__

PARENT: ContextVar[Context | None] = ContextVar("trace_parent", default=None)


class Tracing:
    def __init__(self, endpoint: str | None) -> None:
        self.tracer: Tracer | None = None
        self._provider: TracerProvider | None = None
        if endpoint:
            resource = Resource.create({"service.name": "icotes-gateway", "service.version": __version__})
            self._provider = TracerProvider(resource=resource)
            self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
            self.tracer = self._provider.get_tracer("icotes.gateway")

    def execution(self, surface: str, where: tuple[str, str], submitted: float) -> Span | None:
        """The span of one execution, begun at its submission (`time.monotonic()`); None
        when tracing is off."""
        if self.tracer is None:
            return None
        started_ns = time.time_ns() - int((time.monotonic() - submitted) * 1e9)
        attributes = {"icotes.surface": surface, f"icotes.{where[0].replace('-', '_')}": where[1]}
        return self.tracer.start_span("execute", context=PARENT.get(), kind=SpanKind.SERVER, attributes=attributes, start_time=started_ns)

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()  # what is batched goes out


def end_execution(span: Span, status: str, elapsed: float, queue_wait: float | None, output_bytes: int, dropped: int) -> None:
    span.set_attributes({
        "icotes.status": status,
        "icotes.queue_wait_s": queue_wait if queue_wait is not None else elapsed,
        "icotes.kernel_run_s": elapsed - queue_wait if queue_wait is not None else 0.0,
        "icotes.output_bytes": output_bytes,
        "icotes.dropped_output_bytes": dropped,
    })
    if status != "ok":
        span.set_status(Status(StatusCode.ERROR, status))
    span.end()


class TraceParents:
    """Middleware (only with tracing on): the caller's `traceparent`, for the spans of what the
    request or socket runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        carrier: dict[str, Any] = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])
                                   if k in (b"traceparent", b"tracestate")}
        token = PARENT.set(propagate.extract(carrier) if carrier else None)
        try:
            await self.app(scope, receive, send)
        finally:
            PARENT.reset(token)
