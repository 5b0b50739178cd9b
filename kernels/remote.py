"""Kernels placed elsewhere by an existing engine: what the gateway adds to their launch.

A kernelspec naming a provisioner other than a local one (gateway-provisioners'
`distributed-provisioner` for SSH hosts, `kubernetes-provisioner`, `docker-provisioner`) is
launched by it; the gateway neither confines nor wraps it (the engine does what it does),
and talks to it over the TCP ports the engine reports. Two things are the gateway's:

- **Transport encryption.** Kernel traffic crosses the network, so CurveZMQ is `required`
  by default: the spec must say `"supported_encryption": ["curve"]`, the launcher makes the
  kernel's keys and sends them back sealed with the gateway's public key, and a launch that
  cannot be encrypted fails. Plain TCP only with `remote_kernel_encryption=disabled`.
- **Who chooses placement.** gateway-provisioners reads `KERNEL_*` variables to pick the
  host, image, namespace, uid and kernel class. A Jupyter client may send `KERNEL_*`
  variables; for these kernels, the ones an engine reads are the operator's (the spec's
  `env`), so the client's are dropped, and `KERNEL_USERNAME` (which gateway-provisioners
  checks against `GP_UNAUTHORIZED_USERS`, root by default) is the gateway's setting.
"""

from __future__ import annotations

import os
from typing import Literal

from jupyter_client.kernelspec import KernelSpec
from pydantic import BaseModel, Field

from . import forked_provisioner, provisioner

# Provisioners that start the kernel as a process of this host (the last is jupyter_client's).
LOCAL_PROVISIONERS = frozenset({provisioner.NAME, forked_provisioner.NAME, "local-provisioner"})

# What gateway-provisioners and its launchers read to decide where, as whom and as what a
# kernel runs (its own `KERNEL_ID`, `KERNEL_LANGUAGE` and `KERNEL_NAME` it sets itself).
ENGINE_ENV = frozenset({
    "KERNEL_REMOTE_HOST", "KERNEL_USERNAME", "KERNEL_UID", "KERNEL_GID", "KERNEL_IMAGE",
    "KERNEL_EXECUTOR_IMAGE", "KERNEL_NAMESPACE", "KERNEL_SERVICE_ACCOUNT_NAME", "KERNEL_CLUSTER_ROLE",
    "KERNEL_POD_NAME", "KERNEL_POD_TEMPLATE_PATH", "KERNEL_WORKING_DIR", "KERNEL_LAUNCH_TIMEOUT",
    "KERNEL_CLASS_NAME", "KERNEL_SPARK_CONTEXT_INIT_MODE", "KERNEL_LOG_DIR", "KERNEL_ID", "KERNEL_NAME",
    "KERNEL_LANGUAGE",
})


class RemoteConfig(BaseModel):
    """Settings for kernels an engine places elsewhere (gateway-provisioners reads its own
    `GP_*` variables at import: see the README)."""

    remote_kernel_encryption: Literal["required", "disabled"] = Field(
        "required",
        description="CurveZMQ on the kernel ports of kernels placed elsewhere: required (the launch fails without it), or disabled (plain TCP: only where the network between them is trusted)",
    )
    remote_listener_timeout_s: float = Field(
        2.0, gt=0,
        description="seconds to reach a remote kernel's launcher (its signals, shutdown, liveness); gateway-provisioners' own 0.01 s (GP_SOCKET_TIMEOUT) fails on a busy host: kernels then look dead, or outlive their shutdown",
    )
    remote_kernel_username: str = Field(
        "icotes", min_length=1, pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$",
        description="KERNEL_USERNAME for kernels placed elsewhere (gateway-provisioners refuses root, and names Kubernetes pods after it)",
    )


def configure_engines(config: RemoteConfig) -> None:
    """What gateway-provisioners reads from the environment at import, before it is imported
    (a provisioner is loaded when a kernelspec first needs it); an operator's own GP_* wins."""
    os.environ.setdefault("GP_SOCKET_TIMEOUT", str(config.remote_listener_timeout_s))


def is_remote(spec: KernelSpec) -> bool:
    """Whether the spec's kernel is started by an engine other than this host's."""
    named = (spec.metadata.get("kernel_provisioner") or {}).get("provisioner_name")
    return named is not None and named not in LOCAL_PROVISIONERS


def launch_env(env: dict[str, str], config: RemoteConfig) -> dict[str, str]:
    """The variables a remotely placed kernel's launch gets: the engine's choices dropped,
    the gateway's user name set."""
    kept = {k: v for k, v in env.items() if k not in ENGINE_ENV}
    kept["KERNEL_USERNAME"] = config.remote_kernel_username
    return kept


def encryption_policy(config: RemoteConfig) -> str:
    """jupyter_client's `transport_encryption` for a remotely placed kernel."""
    return config.remote_kernel_encryption
