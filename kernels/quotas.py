"""Each client's share of the gateway: sessions, kernels, and kernel starts per minute.

Capacity and the pool are the gateway's; without shares, one client holding `max_sessions`
sessions locks every other client out, and one restarting its kernel in a loop drains the
pool that everybody's next kernel comes from. A client is whoever a token names.

A `ClientQuota` stands in front of the pool for one client: the same `acquire` and `release`,
counted. Reservations are taken before any wait, so a burst cannot overshoot.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from .errors import ClientQuotaExceeded
from .kernel import Kernel
from .pool import KernelPool

_WINDOW_S = 60.0


@dataclass
class QuotaLimits:
    sessions: int
    kernels: int
    starts_per_minute: int  # 0: no limit


class ClientQuota:
    def __init__(self, owner: str, limits: QuotaLimits, pool: KernelPool) -> None:
        self.owner = owner
        self.limits = limits
        self._pool = pool
        self.sessions = 0  # open or opening
        self.kernels = 0  # held or being fetched
        self._starts: deque[float] = deque()  # when each kernel was taken, within the window

    # -- sessions ----------------------------------------------------------------------

    def open_session(self) -> None:
        if self.sessions >= self.limits.sessions:
            raise ClientQuotaExceeded(
                f"this client has {self.limits.sessions} sessions open (client_max_sessions); close one or try again later"
            )
        self.sessions += 1

    def session_closed(self) -> None:
        self.sessions -= 1

    # -- kernels (the pool's interface) -----------------------------------------------

    async def acquire(self, spec_name: str) -> Kernel:
        self._reserve()
        try:
            return await self._pool.acquire(spec_name)
        except BaseException:
            self.kernels -= 1
            raise

    async def acquire_fresh(self, spec_name: str, env: dict[str, str]) -> Kernel:
        self._reserve()
        try:
            return await self._pool.acquire_fresh(spec_name, env)
        except BaseException:
            self.kernels -= 1
            raise

    def release(self, kernel: Kernel) -> None:
        self.kernels -= 1
        self._pool.release(kernel)

    def let_go(self, kernel: Kernel) -> None:
        self.kernels -= 1
        self._pool.let_go(kernel)

    def adopt(self, kernels: int) -> None:
        """A session taken over from another gateway, with its kernels: counted, never
        refused (refusing would end a session its client still has)."""
        self.sessions += 1
        self.kernels += kernels
        self._pool.adopt(kernels)

    def check_starts(self, count: int) -> None:
        """Refuse now what would take `count` kernels past the starts-per-minute share
        (a restart, before it stops anything)."""
        self._forget_old_starts()
        if self.limits.starts_per_minute and len(self._starts) + count > self.limits.starts_per_minute:
            raise ClientQuotaExceeded(
                f"this client took {len(self._starts)} kernels in the last minute, of "
                f"{self.limits.starts_per_minute} (client_starts_per_minute: sessions, one-shot runs, "
                "restarts, new languages); try again shortly"
            )

    def _forget_old_starts(self) -> None:
        now = time.monotonic()
        while self._starts and now - self._starts[0] > _WINDOW_S:
            self._starts.popleft()

    def _reserve(self) -> None:
        if self.kernels >= self.limits.kernels:
            raise ClientQuotaExceeded(
                f"this client holds {self.limits.kernels} kernels (client_max_kernels); close a session or try again later"
            )
        self.check_starts(1)
        self.kernels += 1
        self._starts.append(time.monotonic())

class Quotas:
    """Every client's quota, made on first use. Clients are the names of the configured
    tokens (or the one anonymous client): a fixed set, so none need be forgotten."""

    def __init__(self, limits: QuotaLimits, pool: KernelPool) -> None:
        self.limits = limits
        self._pool = pool
        self._clients: dict[str, ClientQuota] = {}

    def of(self, owner: str) -> ClientQuota:
        quota = self._clients.get(owner)
        if quota is None:
            quota = self._clients[owner] = ClientQuota(owner, self.limits, self._pool)
        return quota
