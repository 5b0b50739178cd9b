"""The gateway's own kernel provisioner: local kernels, each confined (see sandbox.py).

jupyter_client starts every kernel through the provisioner its kernelspec names. The gateway
names this one in every spec that names none (kernelspecs.py), so the local-only parts of a
launch live here and nowhere else: the runtime directory with its ipc sockets, the wait for
those sockets, the confinement wrapper, the kernel's stderr pipe, and, once the kernel is
gone, its uid and cgroup. A spec naming another provisioner (gateway-provisioners' SSH or
Kubernetes ones, or jupyter_client's plain local one) is launched by that one, unwrapped, and
the rest of the gateway talks to it the same way, over whatever transport it chose.

Registered under jupyter_client's `jupyter_client.kernel_provisioners` entry point
(pyproject.toml) as `icotes-confined-provisioner`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_client import AsyncKernelManager
from jupyter_client.provisioning import LocalProvisioner

from .errors import KernelStartFailed
from .exit_codes import death_reason
from .fork_server import ForkServer
from .kernel_stderr import KernelStderr
from .runtime_dirs import RuntimeDirs
from .sandbox import Confinement, Sandbox

log = logging.getLogger(__name__)

NAME = "icotes-confined-provisioner"

_RELEASE_ATTEMPTS = 50


@dataclass
class LocalHost:
    """What every kernel this gateway starts on its own host shares."""

    runtime_dirs: RuntimeDirs
    sandbox: Sandbox | None = None  # None or disabled: kernels run unconfined
    forks: ForkServer | None = None  # the templates forked kernels come from


class GatewayKernelManager(AsyncKernelManager):
    """A kernel manager that hands its provisioner the gateway's `LocalHost` (provisioners
    that launch elsewhere never look at it)."""

    def __init__(self, local_host: LocalHost | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.local_host = local_host


class ConfinedProvisioner(LocalProvisioner):  # type: ignore[misc]
    """jupyter_client's local provisioner, with each kernel confined and on ipc sockets."""

    runtime_dir: Path | None = None
    confinement: Confinement | None = None
    stderr: KernelStderr | None = None

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        km = self.parent
        host: LocalHost | None = getattr(km, "local_host", None)
        if host is None:
            raise KernelStartFailed(f"{NAME} launches kernels for the icotes gateway only")
        self.runtime_dir = host.runtime_dirs.create()
        # ipc transport: unix sockets in a private directory. TCP would mean picking free
        # ports and releasing them before the kernel binds, which races under a burst.
        km.transport = "ipc"
        km.ip = str(self.runtime_dir / "s")
        km.connection_file = str(self.runtime_dir / "c.json")
        km.cache_ports = False
        sandbox = host.sandbox
        if sandbox is not None and sandbox.enabled:
            self.confinement = sandbox.prepare(self.runtime_dir)
            if sandbox.probe.bwrap:
                # A signal would reach bwrap, not the kernel: interrupt with a control message.
                self.kernel_spec.interrupt_mode = "message"
        kwargs = await super().pre_launch(**kwargs)
        if self.confinement is not None:
            kwargs["cmd"] = self._command(kwargs["cmd"])
        self.stderr = KernelStderr()
        return {**kwargs, "stdout": subprocess.DEVNULL, "stderr": self.stderr.write_fd}

    def _command(self, cmd: list[str]) -> list[str]:
        """The kernel's command, confined."""
        assert self.confinement is not None
        return self.confinement.wrap(cmd, self.kernel_spec.resource_dir)

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        try:
            return await super().launch_kernel(cmd, **kwargs)
        finally:
            if self.stderr is not None:
                self.stderr.launched()

    async def post_launch(self, **kwargs: Any) -> None:
        await super().post_launch(**kwargs)
        await self._sockets_bound()

    async def _sockets_bound(self) -> None:
        """Wait until the kernel has bound every ipc socket.

        A socket connected before its peer binds retries only every 100 ms, each on its own
        timer: shell could answer while stdin is still unconnected, and an input_request
        sent then is dropped. Connecting after the bind makes every channel live at once.
        Unbounded here; the caller's `startup_timeout` bounds it.
        """
        info = self.connection_info
        ports = [info[name] for name in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")]
        paths = [Path(f"{info['ip']}-{port}") for port in ports]
        while not all(path.exists() for path in paths):
            code = await self.poll()
            if code is not None:
                await asyncio.sleep(0.05)  # what it said on its way out
                said = self.stderr.tail() if self.stderr is not None else ""
                raise KernelStartFailed(
                    f"kernel died while starting: {death_reason(code)}" + (f"; it said: {said}" if said else "")
                )
            await asyncio.sleep(0.005)

    # -- what the gateway asks of a local kernel, beyond jupyter_client's interface ----------

    def kernel_ready(self) -> None:
        """The kernel has answered kernel_info, before any code runs: take the runtime
        directory back from it (it lies outside the kernel's size-limited mounts)."""
        if self.confinement is not None:
            self.confinement.seal()

    def exit_fd(self) -> int | None:
        """A pidfd of the kernel's process for the caller to keep (exit_watch.py), or None.

        A forked kernel's own pidfd, duplicated; else one opened on the child's pid, which no
        other process can have taken while the child is unreaped (`returncode` unset)."""
        process = self.process
        if process is None or process.returncode is not None:
            return None
        try:
            pidfd = getattr(process, "pidfd", None)
            return os.dup(pidfd) if isinstance(pidfd, int) and pidfd >= 0 else os.pidfd_open(process.pid)
        except (OSError, AttributeError):  # gone already, or no pidfds here: polled instead
            return None

    def death_hint(self) -> str | None:
        return self.confinement.death_hint() if self.confinement is not None else None

    def diagnostics(self) -> str:
        stderr = self.stderr
        return f"it wrote {stderr.total if stderr else 0} bytes to stderr, last: {stderr.tail(300) if stderr else ''!r}"

    async def cleanup(self, restart: bool = False) -> None:
        await super().cleanup(restart)
        if self.stderr is not None:
            self.stderr.close()
            self.stderr = None
        await self._release_confinement()
        if self.runtime_dir is not None:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
            self.runtime_dir = None

    async def _release_confinement(self) -> None:
        # The cgroup can only go once the last process in it is gone, which after a
        # SIGKILL takes a moment.
        if self.confinement is None:
            return
        for _ in range(_RELEASE_ATTEMPTS):
            if self.confinement.release():
                self.confinement = None
                return
            await asyncio.sleep(0.1)
        log.warning("kernel %s: cgroup still busy after shutdown", self.kernel_id)
