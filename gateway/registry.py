"""Every live session, in one place: its id, owner, kernels, channel and lifetime, and the
capacity they all count against. Whatever counts, lists, finds or closes sessions asks this."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from kernels.errors import CapacityExceeded, ClientQuotaExceeded, ServiceDraining, SessionNotFound
from kernels.kernel import Kernel
from kernels.languages import Languages
from kernels.quotas import Quotas
from kernels.session import Session
from kernels.sessions import open_session, restore_session

from .channel import SessionChannel
from .errors import WS_TAKEN_OVER
from .settings import Settings

if TYPE_CHECKING:
    from .replicas import Replicas

log = logging.getLogger("gateway")


class SessionRegistry:
    def __init__(self, settings: Settings, languages: Languages, quotas: Quotas) -> None:
        self.settings = settings
        self.languages = languages
        self.quotas = quotas
        self._channels: dict[str, SessionChannel] = {}
        self._pending = 0  # sessions whose kernel is being fetched
        self.replicas: Replicas | None = None  # with a shared store: the other replicas
        self.draining: str | None = None  # why no session opens now (drain.py)

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
        if self.draining is not None:
            raise ServiceDraining(self.draining)
        # Pending creations count, so a burst cannot overshoot the limit.
        if len(self._channels) + self._pending >= s.max_sessions:
            raise CapacityExceeded(f"the gateway runs max_sessions ({s.max_sessions}) sessions; try again later")
        self._pending += 1
        try:
            if self.replicas is not None:
                await self._check_client_everywhere(owner)
            session = await open_session(self.quotas.of(owner), self.languages, language, spec_name, env)
        finally:
            self._pending -= 1
        channel = self._add(session, owner, owned_by_socket)
        if self.replicas is not None:
            try:
                await self.replicas.watch(channel)
            except BaseException:
                await self.close(session.id, "the shared store could not record it")
                raise
        return channel

    async def _check_client_everywhere(self, owner: str) -> None:
        """A client's share of sessions counts those it has on every replica."""
        limit = self.quotas.of(owner).limits.sessions
        if await self.replicas.sessions_of(owner) >= limit:
            raise ClientQuotaExceeded(
                f"this client has {limit} sessions open (client_max_sessions, on all replicas); close one or try again later"
            )

    def _add(self, session: Session, owner: str, owned_by_socket: bool) -> SessionChannel:
        s = self.settings
        channel = SessionChannel(session, owner, s.session_log_frames, s.session_log_bytes, owned_by_socket)
        self._channels[session.id] = channel
        return channel

    def restore(
        self, session_id: str, owner: str, primary: str, kernels: dict[str, Kernel], owned_by_socket: bool
    ) -> SessionChannel:
        """A session taken over from a replica that died, on its kernels attached to here;
        with no socket yet, its grace (a /ws session's) starts now."""
        session = restore_session(self.quotas.of(owner), self.languages, session_id, primary, kernels)
        channel = self._add(session, owner, owned_by_socket)
        if owned_by_socket:
            channel.expiry = asyncio.get_running_loop().call_later(self.settings.session_grace_s, self.expire(channel))
        return channel

    async def hand_over(
        self, session_id: str, reason: str = "the session moved to another gateway replica; reconnect", code: int = WS_TAKEN_OVER
    ) -> None:
        """Another replica holds the session now (or will: a drain): let go of it here,
        kernels left running."""
        channel = self._channels.pop(session_id, None)
        if channel is None:
            return
        await channel.session.close(hand_over=True)
        await channel.close(reason, code)
        log.info("session %s: handed over to another replica", session_id)

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
        if self.replicas is not None:
            try:
                await self.replicas.ended(channel)
            except Exception as exc:  # a stale record leads here, where it is not: 404
                log.warning("session %s: not removed from the store: %s", session_id, exc)
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
