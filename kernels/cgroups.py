"""Per-kernel control groups: a memory and a process limit the kernel cannot raise, and a
CPU share, so that one kernel's loop gets no more of the CPU than any other kernel.

Probed once at start-up: cgroup v2 where the memory and pids controllers can be delegated
to a subtree of ours, v1 where those hierarchies are mounted and writable, else none. The
cpu controller is used where it is there too.

The gateway's own group holds all its kernels and has limits of its own (memory, pids):
per-kernel limits add up to far more than the host has.

Each gateway keeps its kernels' groups under `icotes/<its pid>/`. At start-up it kills
whatever is left in the groups of gateways that are gone: a gateway killed with SIGKILL while
a sandbox was half set up can leave one behind, and the group still knows its processes.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_ROOT = Path("/sys/fs/cgroup")
_GROUP = "icotes"
_TASKS_PER_CPU = 8


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


@dataclass
class GroupLimits:
    """What the gateway's group allows all its kernels together, and each kernel's CPU weight
    (cgroup v2's scale: 100 is the default, 1 to 10000)."""

    memory_bytes: int
    pids: int
    cpu_weight: int = 100


class Cgroups:
    def __init__(self, limits: GroupLimits) -> None:
        self.mine = str(os.getpid())
        self.limits = limits
        self.cpu = False  # whether kernels get a CPU share
        self.version = self._probe()
        if self.version is not None:
            self._sweep()
            self._limit_all()

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
        controllers = set((_ROOT / "cgroup.controllers").read_text().split()) if (_ROOT / "cgroup.controllers").exists() else set()
        if not {"memory", "pids"} <= controllers:
            return False
        wanted = "+memory +pids" + (" +cpu" if "cpu" in controllers else "")
        # Each level must hand its controllers down to the next.
        (_ROOT / "cgroup.subtree_control").write_text(wanted)
        for base in (_ROOT / _GROUP, _ROOT / _GROUP / self.mine):
            base.mkdir(exist_ok=True)
            (base / "cgroup.subtree_control").write_text(wanted)
        self.cpu = "cpu" in (_ROOT / _GROUP / self.mine / "cgroup.subtree_control").read_text().split()
        return True

    def _setup_v1(self) -> bool:
        for controller in ("memory", "pids"):
            if not (_ROOT / controller / "cgroup.procs").exists():
                return False
            (_ROOT / controller / _GROUP / self.mine).mkdir(parents=True, exist_ok=True)
        try:
            (_ROOT / "cpu" / _GROUP / self.mine).mkdir(parents=True, exist_ok=True)
            self.cpu = (_ROOT / "cpu" / _GROUP / self.mine / "cpu.shares").exists()
        except OSError:
            self.cpu = False
        return True

    def _limit_all(self) -> None:
        """The limits of the gateway's own group, which hold for all its kernels together."""
        memory, pids = str(self.limits.memory_bytes), str(self.limits.pids)
        if self.cpu:
            self._weigh_all()
        try:
            if self.version == "v2":
                (_ROOT / _GROUP / self.mine / "memory.max").write_text(memory)
                (_ROOT / _GROUP / self.mine / "pids.max").write_text(pids)
            else:
                mine = _ROOT / "memory" / _GROUP / self.mine
                (mine / "memory.limit_in_bytes").write_text(memory)
                _write_if_exists(mine / "memory.memsw.limit_in_bytes", memory)
                (_ROOT / "pids" / _GROUP / self.mine / "pids.max").write_text(pids)
        except OSError as exc:
            log.warning("could not limit the kernels' group as a whole: %s", exc)

    def _weigh_all(self) -> None:
        """The CPU weight of all kernels together, against the host's other processes.

        A group competes with the tasks beside it as one of them: left at the default, all
        kernels together would get no more CPU than the gateway's one thread (the benchmark
        lost half its throughput so). They get as much as `_TASKS_PER_CPU` busy tasks per
        CPU would, which still leaves the gateway its share when every kernel loops.
        """
        tasks = _TASKS_PER_CPU * (os.cpu_count() or 1)
        for group in (_ROOT / _GROUP, _ROOT / _GROUP / self.mine) if self.version == "v2" else \
                (_ROOT / "cpu" / _GROUP, _ROOT / "cpu" / _GROUP / self.mine):
            name, value = ("cpu.weight", min(10000, 100 * tasks)) if self.version == "v2" else ("cpu.shares", 1024 * tasks)
            try:
                (group / name).write_text(str(value))
            except OSError as exc:
                log.warning("could not weigh the kernels' CPU share: %s", exc)

    def _tops(self) -> list[Path]:
        if self.version == "v2":
            return [_ROOT / _GROUP]
        tops = [_ROOT / "memory" / _GROUP, _ROOT / "pids" / _GROUP]
        return tops + ([_ROOT / "cpu" / _GROUP] if (_ROOT / "cpu" / _GROUP).is_dir() else [])

    def _sweep(self) -> None:
        """Kill and remove what gateways that no longer run left in their groups."""
        for top in self._tops():
            for owner in top.iterdir():
                if not owner.is_dir() or owner.name == self.mine or owner_alive(owner.name):
                    continue
                groups = [g for g in owner.iterdir() if g.is_dir()] + [owner]
                stale = Cgroup(groups, [g / "cgroup.procs" for g in groups], [])
                stale.kill_all()
                for _ in range(20):
                    if stale.remove():
                        break
                    time.sleep(0.05)
                else:
                    log.warning("could not remove the stale cgroup %s", owner)

    def close(self) -> None:
        """Remove this gateway's own (by now empty) parent groups."""
        for top in self._tops() if self.version else []:
            try:
                (top / self.mine).rmdir()
            except OSError:
                pass

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
        path = _ROOT / _GROUP / self.mine / name
        path.mkdir()
        (path / "memory.max").write_text(str(memory_bytes))
        _write_if_exists(path / "memory.swap.max", "0")
        (path / "pids.max").write_text(str(pids))
        if self.cpu:
            (path / "cpu.weight").write_text(str(self.limits.cpu_weight))
        return Cgroup([path], [path / "cgroup.procs"], [path / "memory.events"])

    def _create_v1(self, name: str, memory_bytes: int, pids: int) -> Cgroup:
        memory = _ROOT / "memory" / _GROUP / self.mine / name
        pid_group = _ROOT / "pids" / _GROUP / self.mine / name
        memory.mkdir()
        pid_group.mkdir()
        (memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
        # Without this, a kernel over its limit swaps instead of being stopped.
        _write_if_exists(memory / "memory.memsw.limit_in_bytes", str(memory_bytes))
        (pid_group / "pids.max").write_text(str(pids))
        dirs = [memory, pid_group]
        if self.cpu:
            cpu = _ROOT / "cpu" / _GROUP / self.mine / name
            cpu.mkdir()
            # v1's scale: 1024 is the default share, as v2's weight 100 is
            (cpu / "cpu.shares").write_text(str(max(2, self.limits.cpu_weight * 1024 // 100)))
            dirs.append(cpu)
        return Cgroup(dirs, [d / "cgroup.procs" for d in dirs], [memory / "memory.oom_control"])


def owner_alive(name: str) -> bool:
    """Whether a group's owner, named by its pid, still runs. Any other name counts as not
    running: under the gateways' own parent group, whatever no live gateway owns is swept."""
    if not name.isdigit():
        return False
    try:
        os.kill(int(name), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_if_exists(path: Path, value: str) -> None:
    try:
        if path.exists():
            path.write_text(value)
    except OSError:
        pass
