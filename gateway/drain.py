"""Graceful drain, on the first SIGTERM: no new sessions or one-shots (503, close 1013), the
running executions let finish for up to `drain_timeout_s`, every client told (close 1012,
"service restart"), then the server stops and every kernel is shut down. A second SIGTERM,
or the drain's end, stops at once (see `__main__.py`).

With a shared store and another replica alive, a session whose kernels are all remote is
handed over instead of ended:
its kernels keep running, its record stays this replica's, and once this replica's heartbeat
lapses another one takes it over (replicas.py), so its clients reconnect there with their
state intact.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from kernels.session import SessionState

from .errors import WS_SERVICE_RESTART
from .runtime import Runtime

log = logging.getLogger("gateway")

_RESTART = "the gateway is restarting; reconnect (the session goes on where it can)"
_REFUSED = "the gateway is draining for a restart; try again in a moment (or at another replica)"


class Drain:
    def __init__(self, runtime: Runtime, timeout: float) -> None:
        self.rt = runtime
        self.timeout = timeout
        self.task: asyncio.Task[None] | None = None

    @property
    def started(self) -> bool:
        return self.task is not None

    def begin(self, stop: Callable[[], None]) -> None:
        """Start draining; `stop` is called at its end (it stops the server)."""
        if self.task is None:
            self.task = asyncio.ensure_future(self._run(stop))

    async def _run(self, stop: Callable[[], None]) -> None:
        try:
            self.rt.sessions.draining = self.rt.executions.draining = _REFUSED
            log.info("drain: new sessions refused; running executions get up to %g s", self.timeout)
            deadline = time.monotonic() + self.timeout
            while self._busy() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            if self._busy():
                log.warning("drain: executions still running after %g s; stopping anyway", self.timeout)
            await self._tell_clients()
        finally:
            stop()

    async def _others_alive(self) -> bool:
        try:
            return await asyncio.wait_for(self.rt.replicas.store.others_alive(), 2)
        except Exception as exc:  # no store: nobody could take them; they end here
            log.warning("drain: the store did not say whether other replicas live: %s", exc)
            return False

    def _busy(self) -> bool:
        return self.rt.executions.running > 0 or any(c.session.state is SessionState.BUSY for c in self.rt.sessions)

    async def _tell_clients(self) -> None:
        handing_over = self.rt.replicas is not None and await self._others_alive()
        for channel in list(self.rt.sessions):
            if handing_over and channel.session.kernels.all_remote():
                await self.rt.sessions.hand_over(channel.session.id, _RESTART, WS_SERVICE_RESTART)
                log.info("session %s: left for another replica to take over", channel.session.id)
            elif channel.sink is not None:
                channel.sink.kick(WS_SERVICE_RESTART, _RESTART)
        await asyncio.sleep(0.2)  # the close frames go out before the server stops
