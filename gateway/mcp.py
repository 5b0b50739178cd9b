"""`/mcp`: the gateway as an MCP server (streamable HTTP, the official SDK), so an agent's MCP
client uses it as its code tool.

Each tool is a call to the gateway's own REST API, made in process as the MCP caller (its
token passed on): the same access checks, ownership, limits, errors and forwarding to the
replica holding a session, with no second implementation of any of them. Stateless HTTP (no
MCP session to keep): any replica answers any call, and the state that matters, the code
session, is named by its id in each call.

A call its client gives up on interrupts the code it runs: on the 2026 wire the client closes
the call's response stream, and the SDK cancels the tool. (On the 2025 wire its cancel is a
notification of its own, which stateless HTTP cannot tie to the call: use `interrupt`.)
"""

from __future__ import annotations

import base64
import json
import logging
import re
from urllib.parse import quote
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
from fastapi import FastAPI
from mcp import types
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings

from kernels.errors import InvalidPath
from kernels.files import check_path

from . import __version__
from .access import presented_token
from .settings import Settings

Content = types.TextContent | types.ImageContent | types.EmbeddedResource
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_IMAGES = ("image/png", "image/jpeg", "image/gif", "image/webp")
# What a rich output is shown as, best first: text for a model, HTML where there is nothing else.
_TEXTS = ("text/plain", "text/markdown", "text/latex", "application/json", "text/html", "image/svg+xml")

INSTRUCTIONS = """\
Runs code for you in sessions: each session is a persistent kernel (IPython for Python, also \
other languages the gateway serves) whose variables, imports and files stay between calls, \
as in a notebook, until it is restarted or closed, or culled after being idle. Open a session \
with open_session and pass its session_id to run_code; without a session_id, run_code uses a \
fresh kernel thrown away afterwards. Files live in the session's own home directory, which is \
private to it and lost when the session ends; paths are relative to it. Kernels have no \
network access."""


class _Gateway:
    """The gateway's REST API, called in process as the MCP request's caller."""

    def __init__(self, app: FastAPI) -> None:
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1", timeout=None)

    async def call(self, ctx: Context, method: str, path: str, **kwargs: Any) -> httpx.Response:
        request = ctx.request_context.request
        token = presented_token(request.scope) if request is not None else None
        headers = {"authorization": f"Bearer {token}"} if token else {}
        response = await self.http.request(method, path, headers=headers, **kwargs)
        if response.status_code >= 400:
            raise ToolError(f"{response.status_code}: {_detail(response)}")
        return response


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        return response.text[:500]
    return detail if isinstance(detail, str) else json.dumps(detail)


class _Bounded:
    """The content of one tool result, within the text and image bounds; what was cut is said."""

    def __init__(self, settings: Settings) -> None:
        self.chars_left = settings.mcp_max_text_chars
        self.image_bytes_left = settings.mcp_max_image_bytes
        self.content: list[Content] = []
        self.cut: list[str] = []

    def text(self, text: str) -> None:
        if not text:
            return
        if len(text) > self.chars_left:
            self.cut.append(f"{len(text) - self.chars_left} characters of output")
            text = text[: self.chars_left]
        self.chars_left -= len(text)
        if text:
            self.content.append(types.TextContent(text=text))

    def image(self, data: str, mime_type: str) -> None:
        size = len(data) * 3 // 4
        if size > self.image_bytes_left:
            self.cut.append(f"a {mime_type} image of {size} bytes")
            return
        self.image_bytes_left -= size
        self.content.append(types.ImageContent(data=data, mime_type=mime_type))

    def done(self) -> list[Content]:
        if self.cut:
            note = "[cut to fit this result: " + "; ".join(self.cut) + "]"
            self.content.append(types.TextContent(text=note))
        return self.content


def _result_content(result: dict[str, Any], settings: Settings) -> list[Content]:
    """An execution_result for a model: a status line, then its outputs in order."""
    bounded = _Bounded(settings)
    line = f"status: {result['status']}"
    if result.get("execution_count") is not None:
        line += f", execution_count {result['execution_count']}"
    bounded.text(line + f", {result.get('execution_time', 0):.3f} s")
    for output in result.get("outputs", []):
        kind = output.get("output_type")
        if kind == "stream":
            prefix = "[stderr]\n" if output.get("name") == "stderr" else ""
            bounded.text(prefix + output.get("text", ""))
        elif kind == "error":
            traceback = "\n".join(output.get("traceback") or [f"{output.get('ename')}: {output.get('evalue')}"])
            bounded.text(_ANSI.sub("", traceback))
        elif kind in ("execute_result", "display_data"):
            _rich(bounded, output.get("data") or {})
    if result["status"] != "ok" and not any(o.get("output_type") == "error" for o in result.get("outputs", [])):
        bounded.text("\n".join(result.get("errors") or []))
    return bounded.done()


def _rich(bounded: _Bounded, data: dict[str, Any]) -> None:
    image = next((mime for mime in _IMAGES if mime in data), None)
    if image is not None:
        bounded.image(data[image], image)
        return  # beside an image, text/plain only names it ("<Figure size 640x480 ...>")
    text = next((mime for mime in _TEXTS if mime in data), None)
    if text is not None:
        value = data[text]
        bounded.text(value if isinstance(value, str) else json.dumps(value))


def _prose(text: str) -> str:
    """A description as one paragraph (what a model reads), whatever its source indentation."""
    return " ".join(text.split())


def _json(value: Any) -> list[Content]:
    return [types.TextContent(text=json.dumps(value, indent=1))]


def build(app: FastAPI, settings: Settings) -> MCPServer:
    server = MCPServer("icotes execution gateway", version=__version__, instructions=INSTRUCTIONS)
    gateway = _Gateway(app)
    limits = f"time-out: {settings.default_timeout:g} s unless asked, at most {settings.max_timeout:g} s"

    @server.tool()
    async def list_languages(ctx: Context) -> list[Content]:
        """The languages sessions can run (each a kernel), and the default."""
        return _json((await gateway.call(ctx, "GET", "/languages")).json())

    @server.tool()
    async def open_session(ctx: Context, language: str = "python", session_id: str | None = None) -> list[Content]:
        """Create a session: a persistent kernel whose variables, imports and files stay
        between run_code calls. With session_id, resume that session instead (it must be
        yours) and see its state. Returns the session's description, with its id."""
        if session_id is not None:
            return _json((await gateway.call(ctx, "GET", _session(session_id))).json())
        return _json((await gateway.call(ctx, "POST", "/sessions", json={"language": language})).json())

    @server.tool(description=_prose(f"""Run code and return what it printed, its result, its errors
        with their traceback, and rich outputs: plots as images, tables as text. In a session
        (session_id) its state persists for the next call; without one, a fresh kernel runs it
        and is thrown away. language: the session's own unless given. {limits}; on a time-out
        the kernel is interrupted and its state kept. Code that waits for input() fails at once."""))
    async def run_code(
        ctx: Context, code: str, session_id: str | None = None, language: str | None = None, timeout: float | None = None
    ) -> list[Content]:
        body: dict[str, Any] = {"code": code, "language": language, "timeout": timeout}
        path = f"{_session(session_id)}/execute" if session_id is not None else "/execute"
        try:
            result = (await gateway.call(ctx, "POST", path, json={k: v for k, v in body.items() if v is not None})).json()
        except anyio.get_cancelled_exc_class():
            if session_id is not None:  # the caller gave up: so does the kernel
                with anyio.CancelScope(shield=True):
                    await gateway.call(ctx, "POST", f"{_session(session_id)}/interrupt")
            raise
        return _result_content(result, settings)

    @server.tool()
    async def interrupt(ctx: Context, session_id: str) -> list[Content]:
        """Interrupt the code the session is running (KeyboardInterrupt in Python); its
        state is kept."""
        return _json((await gateway.call(ctx, "POST", f"{_session(session_id)}/interrupt")).json())

    @server.tool()
    async def restart(ctx: Context, session_id: str, language: str | None = None) -> list[Content]:
        """Restart the session's kernels (or the one of `language`): every variable and
        import is lost, and the files of the kernel's home with it."""
        params = {"language": language} if language else None
        return _json((await gateway.call(ctx, "POST", f"{_session(session_id)}/restart", params=params)).json())

    @server.tool()
    async def list_sessions(ctx: Context) -> list[Content]:
        """Your open sessions, with their languages and states."""
        return _json((await gateway.call(ctx, "GET", "/sessions")).json())

    @server.tool()
    async def close_session(ctx: Context, session_id: str) -> list[Content]:
        """End the session now: its kernels, variables and files are gone."""
        await gateway.call(ctx, "DELETE", _session(session_id))
        return _json({"closed": session_id})

    @server.tool()
    async def list_files(ctx: Context, session_id: str, path: str = "") -> list[Content]:
        """The files of a directory of the session's home ('' is the home itself)."""
        return _json((await gateway.call(ctx, "GET", f"{_session(session_id)}/files", params={"path": path})).json())

    @server.tool(description=_prose(f"""Read a file of the session's home: text as text, images as
        images, anything else as a base64 blob; at most {settings.mcp_max_image_bytes} bytes."""))
    async def read_file(ctx: Context, session_id: str, path: str) -> list[Content]:
        response = await gateway.call(ctx, "GET", _file_url(session_id, path))
        return _file_content(f"file:///{path}", response, settings)

    @server.tool()
    async def write_file(ctx: Context, session_id: str, path: str, content: str, base64_encoded: bool = False) -> list[Content]:
        """Write a file in the session's home (replacing it; parent directories made), for
        the session's code to read: `content` is text, or base64 with base64_encoded."""
        try:
            data = base64.b64decode(content, validate=True) if base64_encoded else content.encode()
        except ValueError:  # binascii.Error
            raise ToolError("400: content is not valid base64") from None
        return _json((await gateway.call(ctx, "PUT", _file_url(session_id, path), content=data)).json())

    return server


def _file_url(session_id: str, path: str) -> str:
    """The REST path of a file, checked first: a URL client would resolve a `..` in it to
    another route before the gateway could refuse it."""
    try:
        checked = check_path(path)
    except InvalidPath as exc:
        raise ToolError(f"400: {exc}") from None
    return f"{_session(session_id)}/files/{quote(checked)}"


def _session(session_id: str) -> str:
    """A session's REST path; an id that is not one (a `..` would lead elsewhere) is refused."""
    if not _SESSION_ID.fullmatch(session_id):
        raise ToolError(f"404: no session with id {session_id!r}")
    return f"/sessions/{session_id}"


def _file_content(uri: str, response: httpx.Response, settings: Settings) -> list[Content]:
    data = response.content
    mime_type = response.headers.get("content-type", "application/octet-stream").split(";")[0]
    if len(data) > settings.mcp_max_image_bytes:
        raise ToolError(f"the file has {len(data)} bytes, more than a tool result carries "
                        f"({settings.mcp_max_image_bytes}); download it over REST instead")
    if mime_type in _IMAGES:
        return [types.ImageContent(data=base64.b64encode(data).decode(), mime_type=mime_type)]
    try:
        text = data.decode()
    except UnicodeDecodeError:
        blob = types.BlobResourceContents(uri=uri, mime_type=mime_type, blob=base64.b64encode(data).decode())
        return [types.EmbeddedResource(resource=blob)]
    bounded = _Bounded(settings)
    bounded.text(text)
    return bounded.done()


def mount(app: FastAPI, settings: Settings) -> Any:
    """Add `/mcp` to `app`; returns the lifespan part its session manager needs."""
    server = build(app, settings)
    logging.getLogger("mcp").setLevel(logging.WARNING)  # else a line per call ("Terminating session: None")
    # Host and Origin are checked for every route by the gateway's own access middleware.
    security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    mcp_app = server.streamable_http_app(stateless_http=True, transport_security=security)
    app.router.routes.extend(mcp_app.routes)

    @asynccontextmanager
    async def running() -> AsyncIterator[None]:
        async with server.session_manager.run():
            yield

    return running
