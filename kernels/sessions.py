"""Every live session, by id."""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid

from .errors import CapacityExceeded, SessionNotFound
from .languages import Languages
from .pool import KernelPool
from .quotas import ClientQuota
from .session import Session

log = logging.getLogger(__name__)


class SessionManager:
    def __init__(self, pool: KernelPool, languages: Languages, max_sessions: int = 100) -> None:
        self.pool = pool
        self.languages = languages
        self.max_sessions = max_sessions
        self._sessions: dict[str, Session] = {}
        self._pending = 0  # sessions whose kernel is being fetched

    async def create(
        self,
        quota: ClientQuota,
        language: str | None = None,
        spec_name: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Session:
        """A session on a pooled kernel; with `env`, on a kernel started for it with that env.

        Named neither a language nor a kernelspec, it starts on the default language's
        kernel and moves to the language of its first request (a bare /ws). Its kernels
        come through `quota`, its client's share."""
        chosen = language is not None or spec_name is not None
        if spec_name is None:
            spec_name = self.languages.spec_for(language)
        # Pending creations count, so a burst cannot overshoot the limit.
        if len(self._sessions) + self._pending >= self.max_sessions:
            raise CapacityExceeded(f"the gateway runs max_sessions ({self.max_sessions}) sessions; try again later")
        quota.open_session()
        self._pending += 1
        try:
            kernel = await (quota.acquire_fresh(spec_name, env) if env else quota.acquire(spec_name))
        except BaseException:
            quota.session_closed()
            raise
        finally:
            self._pending -= 1
        # 128 random bits (a session id must not be guessable), in the UUID shape Jupyter
        # clients expect of kernel ids; no version bits are set, so no bit is given away.
        session_id = str(uuid.UUID(bytes=secrets.token_bytes(16)))
        session = Session(session_id, spec_name, kernel, quota, self.languages, language_chosen=chosen)
        self._sessions[session_id] = session
        log.info("session %s: created (%s)", session_id, spec_name)
        return session

    async def close(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is None:
            raise SessionNotFound(session_id)
        await session.close()
        log.info("session %s: closed", session_id)

    async def discard(self, session_id: str) -> None:
        """Close the session if it is still there (another client may have closed it)."""
        if session_id in self._sessions:
            await self.close(session_id)

    async def close_all(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)

    def __len__(self) -> int:
        return len(self._sessions)
