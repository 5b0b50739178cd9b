"""Sessions over REST: create, list, inspect, run code in, interrupt, restart, delete."""

from __future__ import annotations

from datetime import datetime, timezone

from fastapi import APIRouter, Request, Response

from kernels.session import Session

from .access import principal_of
from .deps import Owner, RuntimeDep, Sessions, runtime_of
from .frames import request_ids
from .models import CreateSession, ExecuteRequest, KernelInfo, SessionExecuteRequest, SessionInfo
from .protocol import ExecutionResult
from .streaming import respond, wants_stream

router = APIRouter(prefix="/sessions", tags=["sessions"])


def session_info(session: Session) -> SessionInfo:
    return SessionInfo(
        id=session.id,
        language=session.language,
        kernel=session.spec_name,
        kernels=[KernelInfo(**k) for k in session.kernel_list()],
        created=_iso(session.created),
        last_activity=_iso(session.last_activity),
        execution_state=session.state.value,
        connections=session.connections,
    )


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat()




@router.post("", response_model=SessionInfo, status_code=201)
async def create_session(sessions: Sessions, owner: Owner, body: CreateSession | None = None) -> SessionInfo:
    """A session with its own kernel; it lives until deleted or culled when idle."""
    channel = await sessions.open(body.language if body else None, owner)
    return session_info(channel.session)


@router.get("", response_model=list[SessionInfo])
async def list_sessions(request: Request, sessions: Sessions, owner: Owner) -> list[SessionInfo]:
    """The caller's sessions (each token sees only its own), on every replica."""
    listed = [session_info(c.session) for c in sessions.owned_by(owner)]
    if sessions.replicas is not None:
        listed += [SessionInfo(**m) for m in await sessions.replicas.listed_elsewhere(request, owner, "/sessions/{}")]
    return listed


@router.get("/{session_id}", response_model=SessionInfo)
async def get_session(session_id: str, sessions: Sessions, owner: Owner) -> SessionInfo:
    return session_info(sessions.get(session_id, owner).session)


@router.delete("/{session_id}", status_code=204)
async def delete_session(session_id: str, sessions: Sessions, owner: Owner) -> Response:
    sessions.get(session_id, owner)  # ownership
    await sessions.close(session_id, "deleted over REST")
    return Response(status_code=204)


@router.post(
    "/{session_id}/execute",
    response_model=ExecutionResult,
    response_model_exclude_none=True,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
async def execute_in_session(session_id: str, body: SessionExecuteRequest, request: Request) -> Response:
    """Run code in the session (state kept); queued behind whatever it is running."""
    return await run_in_session(request, session_id, body, wants_stream(request, body.stream))


@router.post("/{session_id}/interrupt", response_model=SessionInfo)
async def interrupt_session(session_id: str, sessions: Sessions, owner: Owner) -> SessionInfo:
    session = sessions.get(session_id, owner).session
    await session.interrupt()
    return session_info(session)


@router.post("/{session_id}/restart", response_model=SessionInfo)
async def restart_session(
    session_id: str, rt: RuntimeDep, owner: Owner, language: str | None = None
) -> SessionInfo:
    """Restart every kernel of the session, or the one of `?language=`; state is lost."""
    session = rt.sessions.get(session_id, owner).session
    await session.restart(rt.languages.spec_for(language) if language else None)
    return session_info(session)


async def run_in_session(
    request: Request, session_id: str, body: ExecuteRequest | SessionExecuteRequest, stream: bool
) -> Response:
    rt = runtime_of(request)
    session = rt.sessions.get(session_id, principal_of(request)).session
    # No stdin over plain HTTP: nobody could answer an input() prompt.
    frames = rt.executions.in_session(
        session, body.code, body.language, body.timeout, request_ids(body.id, None), allow_stdin=False, surface="rest_session"
    )
    return await respond(frames, stream)
