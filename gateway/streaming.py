"""Answering an execution over HTTP: one JSON result, or NDJSON frames as they happen."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from .protocol import Frame

NDJSON = "application/x-ndjson"


def wants_stream(request: Request, stream: bool) -> bool:
    return stream or NDJSON in request.headers.get("accept", "")


async def respond(frames: AsyncIterator[Frame], stream: bool) -> JSONResponse | StreamingResponse:
    """The whole execution as its result, or every frame as one NDJSON line.

    Streaming answers flush each line as it is produced; when the client goes away,
    Starlette cancels the generator, and its `finally` blocks release the kernel.
    """
    if stream:
        return StreamingResponse(_lines(frames), media_type=NDJSON)
    last: Frame | None = None
    async for last in frames:
        pass
    return JSONResponse(last.frame() if last is not None else {})


async def _lines(frames: AsyncIterator[Frame]) -> AsyncIterator[bytes]:
    async for frame in frames:
        yield json.dumps(frame.frame()).encode() + b"\n"
