"""Row 12: what tracing costs a warm execute. A gateway exporting a span per execution (to an
OTLP sink in this process that answers every export) beside one with tracing off, the two
taking turns block by block."""

from __future__ import annotations

import http.server
import threading
from typing import Any

from . import servers
from .drivers import OursSession, alternating


class _Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


async def tracing_rows(blocks: int = 6, runs: int = 200) -> dict[str, float]:
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", servers.free_port()), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    traced = servers.ours(pool_size=1, otlp_endpoint=f"http://127.0.0.1:{sink.server_port}/v1/traces")
    plain = servers.ours(pool_size=1)
    try:
        sessions = {
            "tracing_on": await OursSession.open(traced.ws_url, language="python"),
            "tracing_off": await OursSession.open(plain.ws_url, language="python"),
        }
        return await alternating(sessions, blocks, runs)
    finally:
        traced.stop()
        plain.stop()
        sink.shutdown()
