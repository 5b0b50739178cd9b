"""A session's kernels: one per kernelspec it has used, taken from the pool on first use,
replaced when lost or restarted, and never seen half-replaced."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .kernel import Kernel
from .pool import KernelSource

Tap = Callable[[dict[str, Any]], None]


class SessionKernels:
    """The kernels of one session, by kernelspec name; `primary` is the one it was made with
    (the one the Jupyter API and taps see).

    While a kernel is on its way (first use, restart, replacement), whoever asks for that
    kernelspec waits for it: no request can start on a kernel that is being thrown away.
    """

    def __init__(self, pool: KernelSource, primary: str, kernel: Kernel, on_death: Callable[[], None]) -> None:
        self._pool = pool
        self.primary = primary
        self._kernels: dict[str, Kernel] = {}
        self._coming: dict[str, asyncio.Future[None]] = {}
        self._taps: list[Tap] = []
        self._on_death = on_death
        self.on_change: list[Callable[[], None]] = []  # a kernel came or went
        self._adopt(primary, kernel)

    def add(self, spec_name: str, kernel: Kernel) -> None:
        """Another kernel of the session's, come from elsewhere (a takeover)."""
        self._adopt(spec_name, kernel)

    def get(self, spec_name: str) -> Kernel | None:
        return self._kernels.get(spec_name)

    @property
    def main(self) -> Kernel | None:
        """The primary kernel; None while it is being replaced, or if that failed."""
        return self._kernels.get(self.primary)

    def specs(self) -> list[str]:
        """The kernelspecs that have a kernel now, the primary first."""
        return sorted(self._kernels, key=lambda name: name != self.primary)

    def dead(self) -> list[str]:
        return [name for name, kernel in self._kernels.items() if kernel.is_dead]

    async def get_or_start(self, spec_name: str) -> Kernel:
        """The kernel for `spec_name`: the one there is, the one on its way, or a new one."""
        while (coming := self._coming.get(spec_name)) is not None:
            await asyncio.shield(coming)
        kernel = self._kernels.get(spec_name)
        if kernel is not None:
            return kernel
        await self.replace(spec_name)
        return self._kernels[spec_name]

    async def replace(self, spec_name: str) -> None:
        """A fresh kernel for `spec_name` from the pool (faster than rebooting the old one).

        The old one leaves at once; if no new one can be had, the error is raised and the
        kernelspec has no kernel until someone asks again.
        """
        while (coming := self._coming.get(spec_name)) is not None:
            await asyncio.shield(coming)
        old = self._kernels.pop(spec_name, None)
        self._coming[spec_name] = asyncio.get_running_loop().create_future()
        try:
            if old is not None:
                self._drop(old)
            self._adopt(spec_name, await self._pool.acquire(spec_name))
        finally:
            self._coming.pop(spec_name).set_result(None)

    async def move_primary(self, spec_name: str) -> None:
        """Make `spec_name` the primary kernelspec, giving the old primary kernel back: for
        a session that has run nothing and learns its language from its first request."""
        new = await self._pool.acquire(spec_name)
        old = self._kernels.pop(self.primary, None)
        if old is not None:
            self._drop(old)
        self.primary = spec_name
        self._adopt(spec_name, new)

    def tap(self, fn: Tap) -> Callable[[], None]:
        """Call `fn` with every message of the primary kernel, this one and the ones that
        replace it; returns the function that stops it."""
        self._taps.append(fn)
        if self.main is not None:
            self.main.taps.append(fn)

        def stop() -> None:
            if fn in self._taps:
                self._taps.remove(fn)
            for kernel in self._kernels.values():
                if fn in kernel.taps:
                    kernel.taps.remove(fn)

        return stop

    def release_all(self) -> None:
        for kernel in self._kernels.values():
            self._drop(kernel)
        self._kernels = {}

    def all_remote(self) -> bool:
        """Every kernel is placed elsewhere (and so can outlive this gateway)."""
        return bool(self._kernels) and all(kernel.remote for kernel in self._kernels.values())

    def let_go_all(self) -> None:
        """Disconnect from every kernel and leave them running: another gateway has them."""
        for kernel in self._kernels.values():
            kernel.taps.clear()
            kernel.on_death.clear()
            self._pool.let_go(kernel)
        self._kernels = {}

    def _adopt(self, spec_name: str, kernel: Kernel) -> None:
        self._kernels[spec_name] = kernel
        kernel.on_death.append(self._on_death)
        if spec_name == self.primary:
            kernel.taps.extend(self._taps)
        self._changed()

    def _drop(self, kernel: Kernel) -> None:
        kernel.taps.clear()
        kernel.on_death.clear()
        self._pool.release(kernel)

    def _changed(self) -> None:
        for callback in self.on_change:
            callback()
