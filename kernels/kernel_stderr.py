"""What a kernel process writes to its own stderr, outside the Jupyter protocol.

Inherited, the kernel's fds 1 and 2 would be the gateway's: its code could forge the
gateway's log lines, and fill its log (`os.write(1, ...)` bypasses every output limit; ipykernel
even echoes captured output there). So stdout goes to /dev/null, and stderr to a pipe the
gateway drains: it keeps the last few KB, which say why a kernel that failed to start failed,
counts the rest, and logs none of it above debug.
"""

from __future__ import annotations

import asyncio
import logging
import os

log = logging.getLogger(__name__)

TAIL_BYTES = 4096


class KernelStderr:
    def __init__(self) -> None:
        self._read, self.write_fd = os.pipe()
        os.set_blocking(self._read, False)
        self._tail = b""
        self.total = 0  # bytes the kernel wrote, kept or not
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._read, self._drain)

    def launched(self) -> None:
        """The kernel holds the write end now; ours would keep the pipe open after it died."""
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def _drain(self) -> None:
        try:
            chunk = os.read(self._read, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:  # every writer is gone
            self._loop.remove_reader(self._read)
            return
        self.total += len(chunk)
        self._tail = (self._tail + chunk)[-TAIL_BYTES:]
        log.debug("kernel stderr: %r", chunk[:200])

    def tail(self, limit: int = 1000) -> str:
        """The end of what it wrote, as text, for a person reading why it died."""
        return self._tail[-limit:].decode("utf-8", "replace").strip()

    def close(self) -> None:
        self.launched()
        if self._read >= 0:
            self._loop.remove_reader(self._read)
            os.close(self._read)
            self._read = -1
