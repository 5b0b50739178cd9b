"""The gateway's log lines: plain text, or JSON lines (`GATEWAY_LOG_FORMAT=json`) that carry
the ids of what they are about.

A line about a session begins "session %s:" and one about a kernel "kernel %s:" (the house
convention); the JSON lines lift that first argument out as `session_id` or `kernel_id`.
Every line logged while an HTTP request or socket is served carries its `request_id`: the
client's `X-Request-ID` if it is a plain token, else one made here, and sent back in the
response's `X-Request-ID`. User code and output never reach the log above debug.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from contextvars import ContextVar
from datetime import datetime, timezone

from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
_ABOUT = re.compile(r"^(?:store: )?(session|kernel) %s\b")
_CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HEADER = b"x-request-id"


class RequestIds:
    """Middleware: the id of the request or socket being served, for the log lines about it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == _HEADER), "")
        request_id = given if _CLIENT_ID.fullmatch(given) else uuid.uuid4().hex[:16]
        token = REQUEST_ID.set(request_id)

        async def with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (_HEADER, request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, with_id)
        finally:
            REQUEST_ID.reset(token)


class JsonLines(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the ids it is about."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        about = _ABOUT.match(record.msg) if isinstance(record.msg, str) else None
        if about is not None and isinstance(record.args, tuple) and record.args:
            line[f"{about.group(1)}_id"] = str(record.args[0])
        if (request_id := REQUEST_ID.get()) is not None:
            line["request_id"] = request_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def configure(level: str, fmt: str) -> None:
    """The root logger's handler: text as before, or JSON lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])
