"""What launching a kernel process takes: its options, its environment, the shared ZMQ context."""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import zmq.asyncio
from jupyter_client.kernelspec import KernelSpecManager

from .provisioner import LocalHost
from .remote import RemoteConfig

if TYPE_CHECKING:
    from .kernel import Kernel


@dataclass
class LaunchOptions:
    """How to launch one kernel process: what the sandbox and the settings decide."""

    startup_timeout: float  # the kernel_startup_timeout setting
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    extra_arguments: list[str] = field(default_factory=list)
    # What kernels launched on this host share (runtime dirs, sandbox); other provisioners
    # ignore it.
    local_host: LocalHost | None = None
    # The throw-away cell run before the kernel counts as ready, given the in-kernel modules
    # (kernels/in_kernel/) its process has loaded already (a fork template's).
    warm_up_code: Callable[[Collection[str]], str] | None = None
    # One for every kernel: each manager would otherwise make its own, which costs a
    # millisecond of CPU per start. It reads the spec from disk every time.
    kernelspecs: KernelSpecManager | None = None
    remote: RemoteConfig = field(default_factory=RemoteConfig)  # for kernels placed elsewhere
    # Told of a remote kernel before its launch (False) and once its engine reports it
    # launched (True), before it is ready: from then on it can be reached from anywhere.
    on_remote_launch: Callable[[Kernel, bool], Awaitable[None]] | None = None
    on_started: Callable[[Kernel, float], None] | None = None  # a kernel ready, and its start's seconds


@functools.cache
def zmq_context() -> zmq.asyncio.Context:
    """One ZMQ context for every kernel: each manager and client would otherwise make its
    own, with an I/O thread apiece."""
    return zmq.asyncio.Context()


# The only variables of the gateway's own environment a kernel sees: never its secrets.
_INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")


def kernel_environment(extra: dict[str, str]) -> dict[str, str]:
    env = {k: os.environ[k] for k in _INHERITED_ENV if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(extra)
    return env
