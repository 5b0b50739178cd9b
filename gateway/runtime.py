"""The gateway's running parts, built from the settings, and their start and stop."""

from __future__ import annotations

import asyncio
import logging

from kernels.execution import LimitsConfig
from kernels.fork_server import ForkServer
from kernels.launch import LaunchOptions
from kernels.kernelspecs import kernelspec_manager
from kernels.languages import Languages
from kernels.outputs import warm_output_validation
from kernels.pool import KernelPool, PoolConfig
from kernels.provisioner import LocalHost
from kernels.quotas import QuotaLimits, Quotas
from kernels.remote import RemoteConfig, configure_engines
from kernels.runtime_dirs import RuntimeDirs
from kernels.sandbox import Sandbox, SandboxConfig
from kernels.warm_up import python_warm_up

from .executions import Executions
from .metrics import Metrics
from .tracing import Tracing
from .registry import SessionRegistry
from .replicas import Replicas
from .settings import Settings

log = logging.getLogger("gateway")


def quota_limits(s: Settings) -> QuotaLimits:
    """Each client's share: with several clients, no one of them may take all of it."""
    several = s.clients() > 1
    return QuotaLimits(
        sessions=s.client_max_sessions or (max(1, s.max_sessions // 2) if several else s.max_sessions),
        kernels=s.client_max_kernels or (max(1, s.max_kernels // 2) if several else s.max_kernels),
        starts_per_minute=s.client_starts_per_minute if s.client_starts_per_minute is not None else (60 if several else 0),
    )


class Runtime:
    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.tracing = Tracing(settings.otlp_endpoint)
        configure_engines(RemoteConfig.model_validate(settings, from_attributes=True))
        specs = kernelspec_manager(settings.kernel_env, settings.kernelspec_dirs)
        self.languages = Languages(settings.languages, settings.default_language, specs)
        self.runtime_dirs = RuntimeDirs()
        self.sandbox = Sandbox(SandboxConfig.model_validate(settings, from_attributes=True), self.runtime_dirs.mine)
        self.forks = ForkServer(self.sandbox, self.runtime_dirs.mine)
        self.local_host = LocalHost(self.runtime_dirs, self.sandbox, self.forks)
        self.pool = KernelPool(self.launch_options, PoolConfig.model_validate(settings, from_attributes=True))
        self.quotas = Quotas(quota_limits(settings), self.pool)
        self.sessions = SessionRegistry(settings, self.languages, self.quotas)
        self.executions = Executions(LimitsConfig.model_validate(settings, from_attributes=True), self.languages, self.quotas, self.metrics, self.tracing)
        self.replicas = Replicas(settings, self.sessions, self.launch_options) if settings.store_url else None
        self.sessions.replicas = self.replicas
        self.connections = 0
        self.metrics.watch(self)
        self._culler: asyncio.Task[None] | None = None

    def launch_options(self, spec_name: str) -> LaunchOptions:
        options = LaunchOptions(
            startup_timeout=self.settings.kernel_startup_timeout,
            kernelspecs=self.languages.manager, local_host=self.local_host,
            remote=RemoteConfig.model_validate(self.settings, from_attributes=True),
            on_remote_launch=self.replicas.launched if self.replicas is not None else None,
            on_started=self.metrics.kernel_started,
        )
        if self.languages.language_of(spec_name) == "python":
            # History in memory: IPython's default SQLite file in $HOME would be shared by
            # every kernel of the same user, so `%history -g` could show others' code.
            options.extra_arguments = ["--HistoryManager.hist_file=:memory:"]
            options.warm_up_code = python_warm_up  # the file channel, IPython's formatters
        return options

    # -- life --------------------------------------------------------------------------

    async def start(self) -> None:
        if self.replicas is not None:
            await self.replicas.start()
        warm_output_validation()
        for spec_name in set(self.languages.specs.values()):
            self.pool.warm(spec_name)
        self._culler = asyncio.create_task(self.sessions.cull())

    async def stop(self) -> None:
        if self._culler is not None:
            self._culler.cancel()
        await self.sessions.close_all("the gateway is shutting down")
        await self.pool.close()
        if self.replicas is not None:  # last: closing sessions and the pool tells the store
            await self.replicas.stop()
        self.forks.close()
        self.sandbox.close()
        self.tracing.shutdown()
        self.runtime_dirs.close()
