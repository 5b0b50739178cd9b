"""Each kernel's runtime directory: its connection file and its unix sockets.

They live under a root per gateway, `/tmp/icg/<gateway pid>/`, so that a gateway starting up
can remove what gateways that are gone left behind (connection keys included), as it does
with their cgroups. The root is short on purpose: a unix socket path holds at most 107 bytes.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from .cgroups import owner_alive

log = logging.getLogger(__name__)

ROOT = Path(tempfile.gettempdir()) / "icg"


class RuntimeDirs:
    def __init__(self, root: Path = ROOT) -> None:
        self.root = root
        self.mine = root / str(os.getpid())
        root.mkdir(mode=0o711, exist_ok=True)
        self._sweep()
        self.mine.mkdir(mode=0o711, exist_ok=True)

    def create(self) -> Path:
        return Path(tempfile.mkdtemp(prefix="k", dir=self.mine))

    def _sweep(self) -> None:
        """Remove the directories of gateways that no longer run."""
        for entry in self.root.iterdir():
            # Only what a gateway's pid names: anything else here is not ours to judge.
            if not entry.name.isdigit() or entry.name == self.mine.name or owner_alive(entry.name):
                continue
            log.info("removing the runtime directories a stopped gateway left: %s", entry)
            shutil.rmtree(entry, ignore_errors=True)

    def close(self) -> None:
        """Remove this gateway's own root (its kernels' directories are gone by now)."""
        shutil.rmtree(self.mine, ignore_errors=True)
