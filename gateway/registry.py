"""Every live session, in one place: its id, owner, kernels, channel and lifetime, and the
capacity they all count against. Whatever counts, lists, finds or closes sessions asks this."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable, Iterator

from kernels.errors import CapacityExceeded, SessionNotFound
from kernels.languages import Languages
from kernels.quotas import Quotas
from kernels.sessions import open_session

from .channel import SessionChannel
from .settings import Settings

log = logging.getLogger("gateway")


class SessionRegistry:
    def __init__(self, settings: Settings, languages: Languages, quotas: Quotas) -> None:
        self.settings = settings
        self.languages = languages
        self.quotas = quotas
        self._channels: dict[str, SessionChannel] = {}
        self._pending = 0  # sessions whose kernel is being fetched

    async def open(
        self,
        language: str | None,
        owner: str,
        owned_by_socket: bool = False,
        spec_name: str | None = None,
        env: dict[str, str] | None = None,
    ) -> SessionChannel:
        """A new session of `owner`'s, on a kernel of `language` (or of `spec_name`)."""
        s = self.settings
        # Pending creations count, so a burst cannot overshoot the limit.
        if len(self._channels) + self._pending >= s.max_sessions:
            raise CapacityExceeded(f"the gateway runs max_sessions ({s.max_sessions}) sessions; try again later")
        self._pending += 1
        try:
            session = await open_session(self.quotas.of(owner), self.languages, language, spec_name, env)
        finally:
            self._pending -= 1
        channel = SessionChannel(session, owner, s.session_log_frames, s.session_log_bytes, owned_by_socket)
        self._channels[session.id] = channel
        return channel

    def get(self, session_id: str, owner: str) -> SessionChannel:
        """The session, if it belongs to `owner`; others get SessionNotFound, so nobody
        learns whether another client's session id exists."""
        channel = self._channels.get(session_id)
        if channel is None or not hmac.compare_digest(channel.owner, owner):
            raise SessionNotFound(session_id)
        return channel

    def __contains__(self, session_id: str) -> bool:
        return session_id in self._channels

    def __len__(self) -> int:
        return len(self._channels)

    def __iter__(self) -> Iterator[SessionChannel]:
        return iter(list(self._channels.values()))

    def owned_by(self, owner: str) -> list[SessionChannel]:
        return [c for c in self._channels.values() if c.owner == owner]

    async def close(self, session_id: str, reason: str) -> None:
        channel = self._channels.pop(session_id, None)
        if channel is None:
            raise SessionNotFound(session_id)
        await channel.session.close()
        await channel.close(reason)
        log.info("session %s: closed (%s)", session_id, reason)

    async def close_all(self, reason: str) -> None:
        await asyncio.gather(*(self.close(sid, reason) for sid in list(self._channels)), return_exceptions=True)

    # -- lifetime ------------------------------------------------------------------------

    def expire(self, channel: SessionChannel) -> Callable[[], None]:
        """What to do when a detached /ws session's grace period ends."""

        def expired() -> None:
            if not channel.attached and channel.session.id in self._channels:
                asyncio.ensure_future(self.close(channel.session.id, "grace period over"))

        return expired

    async def cull(self) -> None:
        """Close, forever, the sessions idle longer than `idle_timeout_s` with no socket."""
        s = self.settings
        while True:
            await asyncio.sleep(s.cull_interval_s)
            now = time.time()
            for channel in self:
                session = channel.session
                idle = session.state.value == "idle" or s.cull_busy
                # `connections` counts every socket: /ws and Jupyter's channels alike
                if not session.connections and idle and now - session.last_activity > s.idle_timeout_s:
                    await self.close(session.id, f"idle for {s.idle_timeout_s:g} s")
