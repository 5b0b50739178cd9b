"""A kernel's exit is seen the moment it happens, through a pidfd, not at the next poll."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from types import SimpleNamespace

from kernels.exit_watch import ExitWatch
from kernels.provisioner import ConfinedProvisioner

AN_HOUR = 3600.0  # the poll interval: a watch that returns sooner saw the pidfd


def provisioner_of(process: object) -> SimpleNamespace:
    """What ExitWatch asks of a provisioner: ConfinedProvisioner's own exit_fd, on `process`."""
    return SimpleNamespace(exit_fd=lambda: ConfinedProvisioner.exit_fd(SimpleNamespace(process=process)))


async def test_an_exec_d_kernel_s_exit_is_seen_at_once() -> None:
    child = subprocess.Popen(["sleep", "60"])
    watch = ExitWatch(provisioner_of(child), AN_HOUR)
    try:
        assert watch.fd is not None
        child.send_signal(signal.SIGKILL)
        await asyncio.wait_for(watch.next(), 10)
        assert watch.fd is None  # closed by the watch; polled from here on
        assert child.wait(5) == -signal.SIGKILL  # the pidfd did not reap it: Popen still can
    finally:
        watch.close()
        child.kill()
        child.wait(5)


async def test_a_forked_kernel_s_pidfd_is_duplicated_and_its_exit_seen_at_once() -> None:
    child = subprocess.Popen(["sleep", "60"])
    pidfd = os.pidfd_open(child.pid)
    forked = SimpleNamespace(pid=child.pid, pidfd=pidfd, returncode=None)
    watch = ExitWatch(provisioner_of(forked), AN_HOUR)
    try:
        assert watch.fd is not None and watch.fd != pidfd
        child.send_signal(signal.SIGKILL)
        await asyncio.wait_for(watch.next(), 10)
        os.fstat(pidfd)  # the provisioner's own pidfd is still open: it reads the status
    finally:
        watch.close()
        os.close(pidfd)
        child.kill()
        child.wait(5)


async def test_a_process_already_reaped_is_polled() -> None:
    child = subprocess.Popen(["true"])
    child.wait(5)
    watch = ExitWatch(provisioner_of(child), 0.01)
    assert watch.fd is None  # no pidfd for a pid that may be another process's by now
    await asyncio.wait_for(watch.next(), 5)
