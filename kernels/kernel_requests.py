"""Requests the gateway itself sends a kernel and whose reply it waits for: on shell or
control, and beside a running execution on a subshell of their own where the kernel has them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .errors import KernelBusyTimeout, KernelDied
from .kernel import DIED, Kernel


async def request(
    kernel: Kernel,
    msg_type: str,
    content: dict[str, Any],
    timeout: float,
    *,
    channel: str = "shell",
    subshell_id: str | None = None,
) -> dict[str, Any]:
    """Send one shell or control request and return its reply's content."""
    if kernel.is_dead:
        raise KernelDied(kernel.exit_reason or "kernel is dead")
    msg = kernel.client.session.msg(msg_type, content)
    if subshell_id is not None:
        msg["header"]["subshell_id"] = subshell_id
    queue = kernel.subscribe(msg["header"]["msg_id"])
    try:
        kernel.send(channel, msg)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                reply = await asyncio.wait_for(queue.get(), max(remaining, 0))
            except asyncio.TimeoutError:
                raise KernelBusyTimeout(f"{msg_type} got no reply within {timeout:g} s") from None
            if reply is DIED:
                raise KernelDied(kernel.exit_reason or "kernel died")
            if reply["channel"] == channel:
                return reply["content"]
    finally:
        kernel.unsubscribe(msg["header"]["msg_id"])


async def request_beside(kernel: Kernel, msg_type: str, content: dict[str, Any], timeout: float) -> dict[str, Any]:
    """A shell request that need not wait for a running execution.

    Kernels with subshells (JEP 91, ipykernel 7) answer it on a subshell of its own at
    once; others answer it on the main shell after the running execution.
    """
    return await request(kernel, msg_type, content, timeout, subshell_id=await subshell_of(kernel, timeout))


async def subshell_of(kernel: Kernel, timeout: float) -> str | None:
    """The kernel's subshell for the gateway's own requests, made on first use; None where
    the kernel has no subshells (its main shell answers after the running execution)."""
    if kernel.subshell is None:
        kernel.subshell = asyncio.create_task(_create_subshell(kernel, timeout))
    return await asyncio.shield(kernel.subshell)


async def _create_subshell(kernel: Kernel, timeout: float) -> str | None:
    if "kernel subshells" not in (kernel.info.get("supported_features") or ()):
        return None
    try:
        reply = await request(kernel, "create_subshell_request", {}, timeout, channel="control")
    except KernelBusyTimeout:
        return None
    return reply.get("subshell_id")
