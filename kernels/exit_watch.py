"""When to ask whether a kernel's process still runs: the moment its pidfd says it exited,
or, where there is no pidfd (a remote kernel), every so often.

Polling every kernel five times a second cost the gateway ~2 % of a core per 50 idle
sessions; a pidfd costs nothing until the process ends, and says so at once.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any


class ExitWatch:
    def __init__(self, provisioner: Any, poll_s: float) -> None:
        self.poll_s = poll_s
        # The provisioner's own, duplicated, or a new one: this watch closes it.
        self.fd: int | None = getattr(provisioner, "exit_fd", lambda: None)()

    async def next(self) -> None:
        """Return when it is time to ask: the process has exited, or a poll is due."""
        if self.fd is None:
            await asyncio.sleep(self.poll_s)
            return
        loop = asyncio.get_running_loop()
        exited = loop.create_future()
        loop.add_reader(self.fd, lambda: exited.done() or exited.set_result(None))
        try:
            await exited
        finally:
            loop.remove_reader(self.fd)
        self.close()  # readable for good from now on: poll, should the process still run

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
