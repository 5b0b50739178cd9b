"""`GATEWAY_OTLP_ENDPOINT`: the gateway's OTLP/HTTP exporter sends a span per execution to a
receiver (a plain HTTP server decoding OpenTelemetry's own protobuf), each a child of the
caller's W3C traceparent on REST and on a WebSocket's handshake, and never with its code."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from .conftest import GatewayServer, connect, free_port, result_of

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


class Receiver:
    """An OTLP/HTTP traces endpoint that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        spans = self.spans

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        spans.extend(scope.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, count: int, timeout: float = 20) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.spans) < count:
            assert time.monotonic() < deadline, f"{len(self.spans)} spans of {count}"
            time.sleep(0.1)
        return list(self.spans)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def _attributes(span: Any) -> dict[str, Any]:
    out = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = value.string_value or value.int_value or value.double_value
    return out


async def test_a_span_per_execution_child_of_the_callers_trace(receiver: Receiver) -> None:
    srv = GatewayServer(
        pool_size=1, session_grace_s=0, otlp_endpoint=f"http://127.0.0.1:{receiver.port}/v1/traces",
        env={"OTEL_BSP_SCHEDULE_DELAY": "200"}, kernel_uid_base=76800,
    )
    traceparent = {"traceparent": f"00-{TRACE}-{PARENT}-01"}
    try:
        async with httpx.AsyncClient(base_url=srv.url, timeout=60) as http:
            result = (await http.post("/execute", json={"code": "secret = 'CODE-MARK'\nprint('x' * 10)"}, headers=traceparent)).json()
            assert result["status"] == "ok"
        async with connect(srv, additional_headers={"traceparent": f"00-{TRACE}-{'1' * 16}-01"}) as ws:
            assert result_of(await ws.run("1/0"))["status"] == "error"
            await ws.send({"type": "close_session"})
        spans = receiver.wait_for(2)
    finally:
        assert not srv.stop()
    by_surface = {_attributes(s)["icotes.surface"]: s for s in spans}
    rest, socket = by_surface["rest"], by_surface["ws"]
    for span, parent in ((rest, PARENT), (socket, "1" * 16)):
        assert span.name == "execute"
        assert span.trace_id.hex() == TRACE and span.parent_span_id.hex() == parent
    rest_attrs, socket_attrs = _attributes(rest), _attributes(socket)
    assert rest_attrs["icotes.status"] == "ok" and rest_attrs["icotes.output_bytes"] == 11
    assert rest_attrs["icotes.queue_wait_s"] >= 0 and rest_attrs["icotes.kernel_run_s"] > 0
    assert socket_attrs["icotes.status"] == "error" and socket.status.code == 2  # STATUS_CODE_ERROR
    assert "icotes.session" in socket_attrs and "icotes.one_shot" in rest_attrs
    assert all("CODE-MARK" not in str(s) for s in spans)  # no code in a span
