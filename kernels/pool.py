"""A warm pool: ready kernels per kernelspec, so no request waits for a kernel to boot."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, Field

from . import handoff
from .errors import CapacityExceeded, KernelStartFailed
from .kernel import Kernel
from .launch import LaunchOptions

log = logging.getLogger(__name__)

# After a failed start, wait this long before the pool tries again.
_RETRY_DELAY_S = 1.0


# A taken kernel is replaced this long after it was handed out (see `acquire`).
_REFILL_DELAY_S = 0.1

# A released kernel is shut down this long after: killing it costs the host a few ms of CPU
# (the gateway's part, and the process's teardown), which would otherwise land on the
# answer its taker is still writing (a one-shot's response goes out after the release).
_DISPOSE_DELAY_S = 0.05

# After this many starts in a row fail, requests fail at once instead of waiting.
_FAILURES_TO_GIVE_UP = 3
_CLOSE_WAIT_S = 10.0  # for the kernels still starting when the pool closes


@dataclass
class _Spec:
    ready: deque[Kernel] = field(default_factory=deque)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    starting: int = 0
    waiting: int = 0
    failures: int = 0  # consecutive failed starts
    last_error: KernelStartFailed | None = None

    @property
    def broken(self) -> bool:
        return self.failures >= _FAILURES_TO_GIVE_UP and not self.ready


class KernelSource(Protocol):
    """Where a session's kernels come from: the pool, or a client's quota in front of it."""

    async def acquire(self, spec_name: str) -> Kernel: ...

    def release(self, kernel: Kernel) -> None: ...

    def let_go(self, kernel: Kernel) -> None: ...


class PoolConfig(BaseModel):
    """The pool's settings: their one set of names, defaults and descriptions (the gateway's
    Settings include these fields as they are)."""

    pool_size: int = Field(2, ge=0, description="ready kernels kept per kernelspec")
    # A forked kernel's start is ~45 ms of CPU spread over ~75 ms, much of it waiting on
    # other processes: two at a time (the earlier fixed default) left part of a 2-core
    # machine idle in a burst (20 new sessions: 0.87 s two at a time, 0.73 s four).
    pool_max_parallel_starts: int = Field(
        default_factory=lambda: 2 * len(os.sched_getaffinity(0)), ge=1,
        description="kernels booting at once, at most (default: twice the CPU cores)",
    )
    kernel_acquire_timeout: float = Field(60.0, gt=0, description="seconds a request waits for a kernel")
    max_kernels: int = Field(120, gt=0, description="kernels in use at most (sessions and one-shot runs, starting ones included)")


class KernelPool:
    """Keeps `pool_size` ready kernels per kernelspec; at most `pool_max_parallel_starts`
    boot at once.

    A taken kernel belongs to its taker for good: one-shot kernels are thrown away, never
    returned, so no state can pass from one user to the next.
    """

    def __init__(
        self,
        options_for: Callable[[str], LaunchOptions],
        config: PoolConfig,
    ) -> None:
        self._options_for = options_for
        self.size = config.pool_size
        self.acquire_timeout = config.kernel_acquire_timeout
        self._starts = asyncio.Semaphore(config.pool_max_parallel_starts)
        self._specs: dict[str, _Spec] = {}
        self._starting: set[asyncio.Task[None]] = set()
        self._launching: set[asyncio.Task[Any]] = set()  # of those, the ones in Kernel.start now
        self._stopping: set[asyncio.Task[None]] = set()
        self._disposing: set[Kernel] = set()  # released, to be shut down a beat later
        self._closed = False
        self.in_use = 0
        self.max_in_use = config.max_kernels

    def warm(self, spec_name: str) -> None:
        self._refill(spec_name)

    async def acquire(self, spec_name: str) -> Kernel:
        spec = self._specs.setdefault(spec_name, _Spec())
        waiting = sum(s.waiting for s in self._specs.values())
        if self.in_use + waiting >= self.max_in_use:  # waiters count: no overshoot in a burst
            raise CapacityExceeded(f"max_kernels ({self.max_in_use}) kernels are in use; try again later")
        spec.waiting += 1
        try:
            async with asyncio.timeout(self.acquire_timeout), spec.changed:
                while True:
                    while not (spec.ready or spec.broken):
                        # This caller waits (or another took the last ready one first):
                        # a kernel must start for it now, not after a taker's refill delay.
                        self._refill(spec_name)
                        await spec.changed.wait()
                    if spec.broken:  # tell the caller now, not at the time-out
                        raise KernelStartFailed(f"kernels of {spec_name!r} fail to start: {spec.last_error}")
                    kernel = spec.ready.popleft()
                    if not kernel.is_dead:
                        break
                    self._discard(kernel)  # died while it waited in the pool
                    self._refill(spec_name)
        except TimeoutError:
            raise KernelStartFailed(
                f"no {spec_name!r} kernel became ready within kernel_acquire_timeout "
                f"({self.acquire_timeout:g} s)"
            ) from None
        finally:
            spec.waiting -= 1
        self.in_use += 1
        # Its replacement starts a beat later: a launch holds the event loop for ~25 ms in
        # pieces and the new interpreter takes a core for ~0.5 s, both of which would
        # otherwise land on the first run of the kernel just handed out.
        asyncio.get_running_loop().call_later(_REFILL_DELAY_S, self._refill, spec_name)
        return kernel

    async def acquire_fresh(self, spec_name: str, env: dict[str, str]) -> Kernel:
        """A kernel started now with extra environment variables (a pooled one has its
        environment already). Counted as in use like any other."""
        if self.in_use >= self.max_in_use:
            raise CapacityExceeded(f"max_kernels ({self.max_in_use}) kernels are in use; try again later")
        options = self._options_for(spec_name)
        options.env = {**options.env, **env}
        self.in_use += 1
        started = time.monotonic()
        try:
            async with self._starts:
                return _told(await Kernel.start(spec_name, options), options, time.monotonic() - started)
        except BaseException:
            self.in_use -= 1
            raise

    def adopt(self, kernels: int) -> None:
        """Kernels that came from elsewhere (attached to, not started) are in use too."""
        self.in_use += kernels

    def release(self, kernel: Kernel) -> None:
        """The taker is done with the kernel: shut it down in the background, a beat later."""
        self.in_use -= 1
        if self._closed:  # no beat to wait now: a timer could outlive the event loop
            self._discard(kernel)
            return
        self._disposing.add(kernel)
        asyncio.get_running_loop().call_later(_DISPOSE_DELAY_S, self._dispose, kernel)

    def let_go(self, kernel: Kernel) -> None:
        """The taker hands the kernel to another gateway: disconnect from it, leave it running."""
        self.in_use -= 1
        self._spawn(self._stopping, handoff.hand_off(kernel))

    def stats(self) -> dict[str, Any]:
        return {
            "ready": sum(len(s.ready) for s in self._specs.values()),
            "ready_by_kernelspec": {name: len(s.ready) for name, s in self._specs.items()},
            "starting": sum(s.starting for s in self._specs.values()),
            "starting_by_kernelspec": {name: s.starting for name, s in self._specs.items()},
            "in_use": self.in_use,
        }

    async def close(self) -> None:
        self._closed = True
        # Starts are let finish (each then shuts its kernel down), for a while: a remote
        # kernel cancelled before its launcher reported back cannot be reached to be killed.
        if self._launching:
            await asyncio.wait(list(self._launching), timeout=_CLOSE_WAIT_S)
        for task in list(self._starting):
            task.cancel()
        for kernel in list(self._disposing):
            self._dispose(kernel)
        await asyncio.gather(*self._starting, *self._stopping, return_exceptions=True)
        kernels = []
        for spec in self._specs.values():
            kernels.extend(spec.ready)
            spec.ready.clear()
        await asyncio.gather(*(k.shutdown() for k in kernels), return_exceptions=True)

    # -- background work ---------------------------------------------------------------

    def _refill(self, spec_name: str) -> None:
        if self._closed:
            return
        spec = self._specs.setdefault(spec_name, _Spec())
        wanted = self.size + spec.waiting - len(spec.ready) - spec.starting
        for _ in range(max(0, wanted)):
            spec.starting += 1
            self._spawn(self._starting, self._start_one(spec_name, spec))

    async def _start_one(self, spec_name: str, spec: _Spec) -> None:
        try:
            async with self._starts:
                this = asyncio.current_task()
                self._launching.add(this)
                options, started = self._options_for(spec_name), time.monotonic()
                try:
                    kernel = _told(await Kernel.start(spec_name, options), options, time.monotonic() - started)
                finally:
                    self._launching.discard(this)
        except KernelStartFailed as exc:
            log.warning("pool: %s", exc)
            spec.failures += 1
            spec.last_error = exc
            await self._notify(spec)
            await asyncio.sleep(_RETRY_DELAY_S * min(spec.failures, 30))
            spec.starting -= 1
            self._refill(spec_name)
            return
        except BaseException:
            spec.starting -= 1
            raise
        spec.starting -= 1
        spec.failures = 0
        if self._closed:
            await kernel.shutdown()
            return
        spec.ready.append(kernel)
        await self._notify(spec)

    @staticmethod
    async def _notify(spec: _Spec) -> None:
        async with spec.changed:
            spec.changed.notify_all()

    def _discard(self, kernel: Kernel) -> None:
        self._spawn(self._stopping, kernel.shutdown())

    def _dispose(self, kernel: Kernel) -> None:
        if kernel in self._disposing:  # not already, by close()
            self._disposing.discard(kernel)
            self._discard(kernel)

    @staticmethod
    def _spawn(tasks: set[asyncio.Task[None]], coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)


def _told(kernel: Kernel, options: LaunchOptions, seconds: float) -> Kernel:
    if options.on_started is not None:
        options.on_started(kernel, seconds)
    return kernel
