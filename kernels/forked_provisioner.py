"""The provisioner of forked kernels: ConfinedProvisioner's confinement, with the process
forked from a template that has the imports done (fork_server.py) instead of exec'd.

Named by the shipped Python kernelspec (kernelspecs.py); an operator's ipykernel spec can
name it too. Where a kernel cannot be forked and confined as fully as an exec'd one (no root,
no bubblewrap, a command that is not a plain ipykernel, a template that failed), it is
launched as ConfinedProvisioner launches it, and `/health` says why.

Registered under jupyter_client's `jupyter_client.kernel_provisioners` entry point as
`icotes-forked-provisioner`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from .errors import KernelStartFailed
from .fork_server import ForkedProcess, ForkServer, forkable, job_for
from .provisioner import ConfinedProvisioner
from .sandbox import HOME

log = logging.getLogger(__name__)

NAME = "icotes-forked-provisioner"


class ForkedProvisioner(ConfinedProvisioner):
    forks: ForkServer | None = None
    program: str | None = None

    @property
    def loaded(self) -> tuple[str, ...]:
        """The in-kernel modules the kernel has before any code runs: its template's."""
        return self.process.loaded if isinstance(self.process, ForkedProcess) else ()

    def _command(self, cmd: list[str]) -> list[str]:
        forks = self.parent.local_host.forks
        why = forks.possible if forks is not None else "no fork server"
        if why is None and not forkable(cmd):
            why = "its command is not `python -m ipykernel_launcher`"
        if why is not None:
            if forks is not None:
                forks.problems.setdefault(cmd[0], why)
            return super()._command(cmd)
        self.forks, self.program = forks, cmd[0]
        return cmd

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        if self.forks is None:
            return await super().launch_kernel(cmd, **kwargs)
        try:
            process = await self._fork(cmd, kwargs.get("env") or {})
        except KernelStartFailed as exc:
            # A template that cannot start or fork must not stop kernels from starting.
            log.warning("kernel %s: launched without forking: %s", self.kernel_id, exc)
            self.forks.problems[self.program] = str(exc)
            self.forks = None
            return await super().launch_kernel(super()._command(cmd), **kwargs)
        finally:
            if self.stderr is not None:
                self.stderr.launched()
        self.process, self.pid, self.pgid, self.cwd = process, process.pid, None, HOME
        return self.connection_info

    async def _fork(self, cmd: list[str], env: dict[str, str]) -> ForkedProcess:
        confinement = self.confinement
        assert confinement is not None and self.forks is not None and self.stderr is not None
        if confinement.uid is not None:  # the kernel writes its sockets here (sealed when ready)
            for path in [confinement.runtime_dir, *confinement.runtime_dir.iterdir()]:
                os.chown(path, confinement.uid, confinement.uid)
        job = job_for(confinement.sandbox, cmd[0], confinement.runtime_dir, confinement.uid, cmd, env)
        process = await self.forks.fork(cmd[0], job, self.stderr.write_fd)
        try:
            # Into its cgroups before its init forks the kernel: all of it inside. While the
            # init makes the kernel's namespaces; in a thread, since a write to a v1 memory
            # group can wait ~10 ms for the kernel's RCU.
            procs = confinement.cgroup.procs if confinement.cgroup is not None else []
            await asyncio.gather(process.ready(), asyncio.to_thread(_enter, procs, process.pid))
            process.go()
        except BaseException as exc:
            process.kill()
            process.close()
            if isinstance(exc, OSError):
                raise KernelStartFailed(f"could not place the forked kernel in its cgroup: {exc}") from exc
            raise
        return process


def _enter(procs: list[Path], pid: int) -> None:
    for path in procs:
        path.write_text(str(pid))
