"""Per-kernel control groups: a memory and a process limit the kernel cannot raise.

Probed once at start-up: cgroup v2 where the memory and pids controllers can be delegated
to a subtree of ours, v1 where those hierarchies are mounted and writable, else none.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_ROOT = Path("/sys/fs/cgroup")
_GROUP = "icotes"


@dataclass
class Cgroup:
    """One kernel's groups; `procs` are the files a process writes its pid to, to enter."""

    dirs: list[Path]
    procs: list[Path]
    oom_files: list[Path]

    def oom_killed(self) -> bool:
        """Whether the kernel's memory limit made the OOM killer act in this group."""
        for path in self.oom_files:
            try:
                for line in path.read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and int(value) > 0:
                        return True
            except (OSError, ValueError):
                continue
        return False

    def kill_all(self) -> None:
        """SIGKILL whatever is left inside (daemons that left the kernel's process group)."""
        for procs in self.procs:
            try:
                pids = procs.read_text().split()
            except OSError:
                continue
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass

    def remove(self) -> bool:
        """Remove the groups; False while a process is still inside (retry later)."""
        done = True
        for path in self.dirs:
            try:
                path.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                done = False
        return done


class Cgroups:
    def __init__(self) -> None:
        self.version = self._probe()

    def _probe(self) -> str | None:
        try:
            if self._setup_v2():
                return "v2"
            if self._setup_v1():
                return "v1"
        except OSError as exc:
            log.debug("cgroup probe failed: %s", exc)
        return None

    def _setup_v2(self) -> bool:
        controllers = _ROOT / "cgroup.controllers"
        if not controllers.exists() or not {"memory", "pids"} <= set(controllers.read_text().split()):
            return False
        # Our own group's parent must hand memory and pids down; then ours hands them on.
        base = _ROOT / _GROUP
        base.mkdir(exist_ok=True)
        (_ROOT / "cgroup.subtree_control").write_text("+memory +pids")
        (base / "cgroup.subtree_control").write_text("+memory +pids")
        return True

    def _setup_v1(self) -> bool:
        for controller in ("memory", "pids"):
            if not (_ROOT / controller / "cgroup.procs").exists():
                return False
            (_ROOT / controller / _GROUP).mkdir(exist_ok=True)
        return True

    def create(self, name: str, memory_bytes: int, pids: int) -> Cgroup | None:
        if self.version is None:
            return None
        try:
            return self._create_v2(name, memory_bytes, pids) if self.version == "v2" else \
                self._create_v1(name, memory_bytes, pids)
        except OSError as exc:
            log.warning("could not create cgroup %s: %s", name, exc)
            return None

    def _create_v2(self, name: str, memory_bytes: int, pids: int) -> Cgroup:
        path = _ROOT / _GROUP / name
        path.mkdir()
        (path / "memory.max").write_text(str(memory_bytes))
        _write_if_exists(path / "memory.swap.max", "0")
        (path / "pids.max").write_text(str(pids))
        return Cgroup([path], [path / "cgroup.procs"], [path / "memory.events"])

    def _create_v1(self, name: str, memory_bytes: int, pids: int) -> Cgroup:
        memory = _ROOT / "memory" / _GROUP / name
        pid_group = _ROOT / "pids" / _GROUP / name
        memory.mkdir()
        pid_group.mkdir()
        (memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
        # Without this, a kernel over its limit swaps instead of being stopped.
        _write_if_exists(memory / "memory.memsw.limit_in_bytes", str(memory_bytes))
        (pid_group / "pids.max").write_text(str(pids))
        return Cgroup(
            [memory, pid_group],
            [memory / "cgroup.procs", pid_group / "cgroup.procs"],
            [memory / "memory.oom_control"],
        )


def _write_if_exists(path: Path, value: str) -> None:
    try:
        if path.exists():
            path.write_text(value)
    except OSError:
        pass
