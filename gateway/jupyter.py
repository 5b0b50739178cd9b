"""The Jupyter kernels API (what Jupyter Kernel Gateway serves), so a Jupyter server started
with `--gateway-url` can use this gateway: kernelspecs, kernels, and a pass-through of the
Jupyter message protocol over `/api/kernels/{id}/channels`.

Kernels made here are sessions like any other: pooled, confined, counted, culled.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from kernels.errors import (
    GatewayError, InvalidRequest, KernelError, NotUnicode, SessionNotFound, TooManySockets, UnknownKernelspec,
)
from kernels.session import Session

from . import __version__, jupyter_wire
from .deps import Owner, RuntimeDep, Sessions
from .channel import SessionChannel
from .errors import close_code
from .jupyter_fanout import JupyterClients, Outbox
from .runtime import Runtime

log = logging.getLogger("gateway")
router = APIRouter(tags=["jupyter"])

CLIENT_CHANNELS = ("shell", "stdin", "control")  # iopub only flows from the kernel
# Variables a Jupyter server sends about itself; they need no kernel of their own.
_HOUSEKEEPING_ENV = frozenset({"KERNEL_USERNAME", "KERNEL_LAUNCH_TIMEOUT", "KERNEL_WORKING_DIR", "KERNEL_ID"})
_MAX_ENV_VALUE = 4096


class StartKernel(BaseModel):
    model_config = ConfigDict(extra="ignore")  # `path` and the like: Jupyter's, not ours
    name: str | None = Field(None, description="kernelspec name; the default when absent")
    env: dict[str, str] = Field(default={}, description="KERNEL_* variables and allow-listed ones reach the kernel")
    kernel_id: str | None = Field(None, description="one of the caller's kernels: it is returned rather than a new one started")


def _jupyter_time(timestamp: float) -> str:
    # Jupyter's gateway client parses exactly this format.
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def kernel_model(session: Session) -> dict[str, Any]:
    return {
        "id": session.id,
        "name": session.spec_name,
        "last_activity": _jupyter_time(session.last_activity),
        "execution_state": session.state.value,
        "connections": session.connections,
    }


# -- kernelspecs ---------------------------------------------------------------------------


def _spec_model(rt: Runtime, name: str) -> dict[str, Any]:
    found = rt.languages.kernelspecs.get(name)
    if found is None:
        raise UnknownKernelspec(f"no kernelspec {name!r}; available: {', '.join(sorted(rt.languages.kernelspecs))}")
    resources = {
        path.stem: f"/kernelspecs/{name}/{path.name}"
        for path in Path(found["resource_dir"]).iterdir()
        if path.suffix in (".png", ".svg", ".js", ".css")
    }
    return {"name": name, "spec": found["spec"], "resources": resources}


@router.get("/api")
async def api_version() -> dict[str, str]:
    return {"version": __version__}


@router.get("/api/kernelspecs")
async def kernelspecs(rt: RuntimeDep) -> dict[str, Any]:
    default = rt.languages.spec_for(None)
    return {"default": default, "kernelspecs": {n: _spec_model(rt, n) for n in sorted(rt.languages.kernelspecs)}}


@router.get("/api/kernelspecs/{name}")
async def kernelspec(name: str, rt: RuntimeDep) -> dict[str, Any]:
    return _spec_model(rt, name)


@router.get("/kernelspecs/{name}/{file}")
async def kernelspec_resource(name: str, file: str, rt: RuntimeDep) -> FileResponse:
    found = rt.languages.kernelspecs.get(name)
    base = Path(found["resource_dir"]).resolve() if found else None
    path = (base / file).resolve() if base else None
    if path is None or path.parent != base or not path.is_file():  # no way out of the spec's dir
        raise UnknownKernelspec(f"no resource {file!r} for kernelspec {name!r}")
    return FileResponse(path)


# -- kernels -------------------------------------------------------------------------------


def _kernel_env(rt: Runtime, env: dict[str, str]) -> dict[str, str]:
    """The client's variables that may reach the kernel: KERNEL_* and the allow-list."""
    allowed = set(rt.settings.kernel_env_allowlist)
    kept = {}
    for key, value in env.items():
        if not (key.startswith("KERNEL_") or key in allowed):
            continue
        if len(value) > _MAX_ENV_VALUE or any(c in value for c in "\0\n\r") or "\0" in key or "=" in key:
            raise InvalidRequest(f"environment variable {key!r}: values must be under {_MAX_ENV_VALUE} characters without NUL or newlines")
        kept[key] = value
    return kept


@router.get("/api/kernels")
async def list_kernels(request: Request, sessions: Sessions, owner: Owner) -> list[dict[str, Any]]:
    """The caller's kernels, on every replica (a kernel id is valid at each)."""
    listed = [kernel_model(c.session) for c in sessions.owned_by(owner)]
    if sessions.replicas is not None:
        listed += await sessions.replicas.listed_elsewhere(request, owner, "/api/kernels/{}")
    return listed


@router.post("/api/kernels", status_code=201)
async def start_kernel(rt: RuntimeDep, owner: Owner, body: StartKernel | None = None) -> JSONResponse:
    body = body or StartKernel()
    channel = None
    if body.kernel_id is not None:  # Jupyter returns the kernel the id names, if it exists
        try:
            channel = rt.sessions.get(body.kernel_id, owner)
        except SessionNotFound:
            pass  # a fresh id instead: ids are ours to choose, and secret
    if channel is None:
        channel = await start_kernel_session(rt, owner, body.name, body.env)
    model = kernel_model(channel.session)
    return JSONResponse(model, status_code=201, headers={"Location": f"/api/kernels/{model['id']}"})


async def start_kernel_session(rt: Runtime, owner: str, name: str | None, env: dict[str, str]) -> SessionChannel:
    """A session on a kernel of kernelspec `name` (the default when None), for `owner`."""
    spec_name = name or rt.languages.spec_for(None)
    if spec_name not in rt.languages.kernelspecs:
        raise UnknownKernelspec(f"no kernelspec {spec_name!r}; available: {', '.join(sorted(rt.languages.kernelspecs))}")
    kept = _kernel_env(rt, env)
    own_env = {k: v for k, v in kept.items() if k not in _HOUSEKEEPING_ENV}
    return await rt.sessions.open(None, owner, spec_name=spec_name, env=own_env or None)


@router.get("/api/kernels/{kernel_id}")
async def get_kernel(kernel_id: str, sessions: Sessions, owner: Owner) -> dict[str, Any]:
    return kernel_model(sessions.get(kernel_id, owner).session)


@router.delete("/api/kernels/{kernel_id}", status_code=204)
async def delete_kernel(kernel_id: str, sessions: Sessions, owner: Owner) -> Response:
    sessions.get(kernel_id, owner)  # ownership
    await sessions.close(kernel_id, "deleted over the Jupyter API")
    return Response(status_code=204)


@router.post("/api/kernels/{kernel_id}/interrupt", status_code=204)
async def interrupt_kernel(kernel_id: str, sessions: Sessions, owner: Owner) -> Response:
    session = sessions.get(kernel_id, owner).session
    session.touch()
    await session.kernel.interrupt()  # Jupyter clients track their own requests
    return Response(status_code=204)


@router.post("/api/kernels/{kernel_id}/restart")
async def restart_kernel(kernel_id: str, sessions: Sessions, owner: Owner) -> dict[str, Any]:
    session = sessions.get(kernel_id, owner).session
    await session.restart()
    return kernel_model(session)


# -- the Jupyter message protocol ----------------------------------------------------------


@router.websocket("/api/kernels/{kernel_id}/channels")
async def kernel_channels(ws: WebSocket, kernel_id: str, sessions: Sessions, owner: Owner) -> None:
    """Jupyter messages, both ways, as they are: JSON text frames with a `channel` field
    (binary frames for messages with buffers), or the binary v1 protocol when offered."""
    v1 = jupyter_wire.V1 in ws.scope.get("subprotocols", [])
    await ws.accept(subprotocol=jupyter_wire.V1 if v1 else None)
    try:
        channel = sessions.get(kernel_id, owner)
    except GatewayError as exc:
        await ws.close(code=close_code(exc), reason=str(exc)[:120])
        return
    session = channel.session
    clients: JupyterClients = ws.app.state.jupyter_clients
    try:
        outbox = clients.join(session, owner, v1)
    except TooManySockets as exc:
        await ws.close(code=close_code(exc), reason=str(exc)[:120])
        return
    session.connections += 1
    sender = asyncio.create_task(_send_all(ws, outbox))
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            _pass_to_kernel(session, message.get("text") or message.get("bytes"), v1)
    except WebSocketDisconnect:
        pass
    finally:
        clients.leave(session, outbox)
        session.connections -= 1
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)


def _pass_to_kernel(session: Session, data: str | bytes | None, v1: bool) -> None:
    try:
        name, msg = jupyter_wire.decode(data or "", v1)
        if name not in CLIENT_CHANNELS or not isinstance(msg.get("header"), dict):
            raise jupyter_wire.BadFrame(f"unknown channel {name!r} or no header")
    except jupyter_wire.BadFrame as exc:
        log.warning("session %s: dropped a message: %s", session.id, exc)
        return
    session.touch()
    try:
        session.kernel.send(name, msg)
    except NotUnicode as exc:
        log.warning("session %s: dropped a message: %s", session.id, exc)
    except KernelError:
        log.warning("session %s: kernel gone, message dropped", session.id)


async def _send_all(ws: WebSocket, outbox: Outbox) -> None:
    try:
        while True:
            frame = await outbox.get()
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_text(frame)
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
