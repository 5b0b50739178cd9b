"""A remote kernel handed from one gateway to another: what the one saves, and how the other
attaches to it without starting anything.

Only kernels an engine placed elsewhere (remote.py) can be handed over: their process lives on
whichever gateway started it, reachable over the network, and their provisioner can describe
where it is (gateway-provisioners' `get_provisioner_info`) and be rebuilt from that
description (`load_provisioner_info`). A local kernel is a child of its gateway's host.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.provisioning import KernelProvisionerFactory

from . import remote
from .errors import KernelStartFailed
from .kernel import Kernel
from .launch import LaunchOptions, zmq_context
from .provisioner import GatewayKernelManager

log = logging.getLogger(__name__)


async def saved(kernel: Kernel) -> dict[str, Any]:
    """What another gateway needs to `attach()` to `kernel`: its connection info, keys
    included (whoever holds it can run code in the kernel), and its provisioner's own
    account of where the process is."""
    manager = kernel.manager
    provisioner_info = await manager.provisioner.get_provisioner_info()
    provisioner_info.pop("connection_info", None)  # kept once, below
    return {
        "kernel_id": manager.kernel_id,
        "connection_info": _jsonable(manager.get_connection_info()),
        "provisioner_info": _jsonable(provisioner_info),
    }


async def attach(spec_name: str, saved: dict[str, Any], options: LaunchOptions) -> Kernel:
    """The kernel another gateway started and saved: connected to, proven ready by
    kernel_info as at a start, within `startup_timeout`."""
    manager = GatewayKernelManager(
        options.local_host,
        context=zmq_context(),
        kernel_spec_manager=options.kernelspecs or KernelSpecManager(),
        kernel_name=spec_name,
        kernel_id=saved["kernel_id"],
    )
    kernel = Kernel(spec_name, manager)
    kernel.remote = True
    try:
        await asyncio.wait_for(_reattach(kernel, saved), options.startup_timeout)
    except BaseException as exc:
        await kernel.disconnect()
        if isinstance(exc, KernelStartFailed):
            raise
        reason = "it did not answer in time" if isinstance(exc, asyncio.TimeoutError) else str(exc)
        raise KernelStartFailed(f"kernel {spec_name!r} could not be attached to: {reason}") from None
    return kernel


async def _reattach(kernel: Kernel, saved: dict[str, Any]) -> None:
    manager = kernel.manager
    if not remote.is_remote(manager.kernel_spec):
        raise KernelStartFailed(f"kernel {kernel.spec_name!r} runs on its gateway's host; it ended with it")
    manager.load_connection_info(saved["connection_info"])
    factory = KernelProvisionerFactory.instance(parent=manager.parent)
    manager.provisioner = factory.create_provisioner_instance(manager.kernel_id, manager.kernel_spec, parent=manager)
    await manager.provisioner.load_provisioner_info({**saved["provisioner_info"], "connection_info": saved["connection_info"]})
    if await manager.provisioner.poll() is not None:
        raise KernelStartFailed(f"kernel {kernel.spec_name!r} is gone: its process has ended")
    await kernel.connect()


async def kill_unreported(spec_name: str, kernel_id: str, options: LaunchOptions) -> bool:
    """Kill a kernel whose launcher never reported back (its gateway died while it started):
    nobody has its keys or its launcher's port. Only an engine that can find it by its id
    can: gateway-provisioners' SSH provisioner, through its own SSH client, on each of the
    spec's hosts. Returns whether it was asked to."""
    if not re.fullmatch(r"[0-9a-f]{6,64}", kernel_id):
        return False  # never ours: ids are hex, and go into a shell command below
    manager = GatewayKernelManager(
        options.local_host, kernel_spec_manager=options.kernelspecs or KernelSpecManager(),
        kernel_name=spec_name, kernel_id=kernel_id,
    )
    factory = KernelProvisionerFactory.instance(parent=manager.parent)
    provisioner = factory.create_provisioner_instance(kernel_id, manager.kernel_spec, parent=manager)
    hosts, rsh = getattr(provisioner, "remote_hosts", None), getattr(provisioner, "_rsh", None)
    if not hosts or rsh is None:
        log.warning("kernel %s (%s): launched, never reported back; its engine must reclaim it", kernel_id, spec_name)
        return False
    # The bracket keeps the pattern from matching the remote shell running pkill itself.
    command = f"pkill -KILL -f -- '--kernel-i[d] {kernel_id}'"
    for host in hosts:
        try:
            await asyncio.to_thread(rsh, host, command)
        except Exception as exc:
            log.warning("kernel %s: could not be killed on %s: %s", kernel_id, host, exc)
    log.info("kernel %s (%s): launched, never reported back: killed on %s", kernel_id, spec_name, ", ".join(hosts))
    return True


async def hand_off(kernel: Kernel) -> None:
    """Disconnect and leave the process running: another gateway has it now."""
    await kernel.disconnect()
    await kernel.released()


def _jsonable(info: dict[str, Any]) -> dict[str, Any]:
    """Connection info as JSON can hold it: its key is bytes (the signing key is ASCII hex)."""
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in info.items()}
