"""Jupyter's sessions API (`/api/sessions`), as Kernel Gateway serves it from Jupyter Server:
a notebook's (or console's) path bound to one of its kernels.

A Jupyter session is a small record beside the kernel it names, which is one of our
sessions; it goes when its kernel goes (deleted, culled), as in Jupyter Server.
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from kernels.errors import InvalidRequest, SessionMoving, SessionNotFound

from .access import principal_of
from .deps import runtime_of
from .jupyter import kernel_model, start_kernel_session
from .runtime import Runtime
from .store import Store

router = APIRouter(tags=["jupyter"])


@dataclass
class NotebookSession:
    id: str
    owner: str
    path: str
    name: str | None
    type: str
    kernel_id: str


class NotebookSessions:
    """Every Jupyter session, by id: in memory, or with replicas in their store, where any
    replica finds it (and it outlives the replica that made it)."""

    def __init__(self, store: Store | None = None) -> None:
        self._sessions: dict[str, NotebookSession] = {}
        self._store = store

    async def add(self, owner: str, path: str, name: str | None, type: str, kernel_id: str) -> NotebookSession:
        session_id = str(uuid.UUID(bytes=secrets.token_bytes(16)))
        session = NotebookSession(session_id, owner, path, name, type, kernel_id)
        await self.save(session)
        return session

    async def save(self, session: NotebookSession) -> None:
        if self._store is None:
            self._sessions[session.id] = session
        else:
            await self._store.save_notebook(session.id, session.owner, json.dumps(asdict(session)))

    async def owned_by(self, rt: Runtime, owner: str) -> list[NotebookSession]:
        """The owner's sessions whose kernel still lives; the others are forgotten."""
        if self._store is None:
            found = [s for s in self._sessions.values() if s.owner == owner]
        else:
            found = [NotebookSession(**json.loads(text)) for text in await self._store.notebooks_of(owner)]
        live = []
        for session in found:
            if await self._kernel_lives(rt, session.kernel_id):
                live.append(session)
            else:
                await self.remove(session)
        return live

    async def get(self, rt: Runtime, owner: str, session_id: str) -> NotebookSession:
        found = next((s for s in await self.owned_by(rt, owner) if s.id == session_id), None)
        if found is None:
            raise SessionNotFound(session_id)
        return found

    async def kernel_of(self, session_id: str) -> str | None:
        """The kernel (our session) a Jupyter session names, whoever's it is: where to
        forward a request about it."""
        if self._store is None:
            found = self._sessions.get(session_id)
            return found.kernel_id if found else None
        text = await self._store.notebook(session_id)
        return json.loads(text)["kernel_id"] if text is not None else None

    async def remove(self, session: NotebookSession) -> None:
        if self._store is None:
            self._sessions.pop(session.id, None)
        else:
            await self._store.drop_notebook(session.id, session.owner)

    async def _kernel_lives(self, rt: Runtime, kernel_id: str) -> bool:
        if kernel_id in rt.sessions:
            return True
        record = await self._store.load(kernel_id) if self._store is not None else None
        return record is not None and record.ended is None


class KernelRef(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str | None = None
    name: str | None = None


class SessionBody(BaseModel):
    """POST and PATCH bodies; `notebook` is the old form of `path` and `name`."""

    model_config = ConfigDict(extra="ignore")
    path: str | None = None
    name: str | None = None
    type: str | None = None
    kernel: KernelRef | None = None
    notebook: dict[str, Any] | None = None

    def upgraded(self) -> SessionBody:
        if self.notebook is None:
            return self
        path = self.notebook.get("name") or self.notebook.get("path") or self.path
        return self.model_copy(update={"path": path, "type": self.type or "notebook", "notebook": None})


def _registry(request: Request) -> tuple[Runtime, NotebookSessions]:
    """The gateway's sessions (Jupyter's kernels) and the notebook sessions naming them."""
    return runtime_of(request), request.app.state.notebook_sessions


def session_model(rt: Runtime, session: NotebookSession) -> dict[str, Any]:
    model: dict[str, Any] = {
        "id": session.id,
        "path": session.path,
        "name": session.name,
        "type": session.type,
        "kernel": kernel_model(rt.sessions.get(session.kernel_id, session.owner).session),
    }
    if session.type == "notebook":  # the deprecated form, which Jupyter Server still sends
        model["notebook"] = {"path": session.path, "name": session.name}
    return model


async def _kernel_for(request: Request, ref: KernelRef | None) -> str:
    """The id of the kernel a session names: one of the caller's, or a new one."""
    rt = runtime_of(request)
    if ref is not None and ref.id is not None:
        try:
            return rt.sessions.get(ref.id, principal_of(request)).session.id
        except SessionNotFound:
            pass  # Jupyter Server starts a kernel when the id names none
    return (await start_kernel_session(rt, principal_of(request), ref.name if ref else None, {})).session.id


async def _model_anywhere(request: Request, rt: Runtime, session: NotebookSession) -> dict[str, Any] | None:
    """The session's model from this replica, or from the one whose kernel it names."""
    if session.kernel_id in rt.sessions:
        return session_model(rt, session)
    if rt.replicas is None:
        return None
    return await rt.replicas.describe_elsewhere(request, session.kernel_id, f"/api/sessions/{session.id}")


@router.get("/api/sessions")
async def list_sessions(request: Request) -> list[dict[str, Any]]:
    """The caller's sessions, whichever replica holds their kernels."""
    rt, sessions = _registry(request)
    found = [await _model_anywhere(request, rt, s) for s in await sessions.owned_by(rt, principal_of(request))]
    return [model for model in found if model is not None]


@router.post("/api/sessions", status_code=201)
async def create_session(request: Request, body: SessionBody | None = None) -> JSONResponse:
    """A session for `path`; the one there is if `path` has one already, as in Jupyter."""
    if body is None:
        raise InvalidRequest("No JSON data provided")
    body = body.upgraded()
    if body.path is None or body.type is None:
        raise InvalidRequest(f"Missing field in JSON data: {'path' if body.path is None else 'type'}")
    rt, sessions = _registry(request)
    owner = principal_of(request)
    session = next((s for s in await sessions.owned_by(rt, owner) if s.path == body.path), None)
    if session is None:
        kernel_id = await _kernel_for(request, body.kernel)
        session = await sessions.add(owner, body.path, body.name, body.type, kernel_id)
    model = await _model_anywhere(request, rt, session)
    if model is None:
        raise SessionMoving("the kernel of this path's session is moving between gateway replicas; try again")
    return JSONResponse(model, status_code=201, headers={"Location": f"/api/sessions/{session.id}"})


@router.get("/api/sessions/{session_id}")
async def get_session(session_id: str, request: Request) -> dict[str, Any]:
    rt, sessions = _registry(request)
    return session_model(rt, await sessions.get(rt, principal_of(request), session_id))


@router.patch("/api/sessions/{session_id}")
async def update_session(session_id: str, request: Request, body: SessionBody | None = None) -> dict[str, Any]:
    """Rename or retype the session, or bind it to another kernel (an existing one by id,
    or a new one by kernelspec name, the old kernel then shut down)."""
    if body is None:
        raise InvalidRequest("No JSON data provided")
    body = body.upgraded()
    rt, sessions = _registry(request)
    owner = principal_of(request)
    session = await sessions.get(rt, owner, session_id)
    old_kernel = session.kernel_id
    if body.kernel is not None and body.kernel.id is not None:
        try:
            session.kernel_id = rt.sessions.get(body.kernel.id, owner).session.id
        except SessionNotFound:
            raise InvalidRequest(f"No such kernel: {body.kernel.id}") from None
    elif body.kernel is not None and body.kernel.name is not None:
        session.kernel_id = (await start_kernel_session(rt, principal_of(request), body.kernel.name, {})).session.id
    session.path = body.path if body.path is not None else session.path
    session.name = body.name if body.name is not None else session.name
    session.type = body.type if body.type is not None else session.type
    await sessions.save(session)
    if session.kernel_id != old_kernel and old_kernel in rt.sessions:
        await rt.sessions.close(old_kernel, "replaced in a Jupyter session")
    return session_model(rt, session)


@router.delete("/api/sessions/{session_id}", status_code=204)
async def delete_session(session_id: str, request: Request) -> Response:
    """The session and its kernel go, as in Jupyter Server."""
    rt, sessions = _registry(request)
    session = await sessions.get(rt, principal_of(request), session_id)
    await sessions.remove(session)
    if session.kernel_id in rt.sessions:
        await rt.sessions.close(session.kernel_id, "its Jupyter session was deleted")
    return Response(status_code=204)
