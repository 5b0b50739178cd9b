"""The gateway's running parts, built from the settings: pool, sessions, limits."""

from __future__ import annotations

from kernels.execution import ExecutionLimits
from kernels.kernel import LaunchOptions
from kernels.languages import Languages
from kernels.outputs import warm_output_validation
from kernels.pool import KernelPool
from kernels.sandbox import Sandbox, SandboxConfig
from kernels.sessions import SessionManager

from .settings import Settings


class TimeoutTooLarge(ValueError):
    pass


def sandbox_config(s: Settings) -> SandboxConfig:
    return SandboxConfig(
        mode=s.sandbox,
        memory_bytes=s.memory_limit_bytes,
        pids=s.pids_limit,
        address_space_bytes=s.address_space_bytes,
        cpu_seconds=s.cpu_seconds,
        nproc=s.nproc_limit,
        file_bytes=s.file_size_bytes,
        open_files=s.open_files,
        tmp_bytes=s.tmp_bytes,
        scratch_bytes=s.scratch_bytes,
        network=s.kernel_network,
    )


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.languages = Languages(settings.languages, settings.default_language)
        self.sandbox = Sandbox(sandbox_config(settings))
        self.pool = KernelPool(
            self.launch_options,
            size=settings.pool_size,
            max_parallel_starts=settings.pool_max_parallel_starts,
            acquire_timeout=settings.kernel_acquire_timeout,
        )
        self.sessions = SessionManager(self.pool, self.languages)
        self.connections = 0

    def launch_options(self, spec_name: str) -> LaunchOptions:
        return LaunchOptions(
            startup_timeout=self.settings.kernel_startup_timeout,
            # History in memory: IPython's default SQLite file in $HOME would be shared by
            # every kernel of the same user, so `%history -g` could show others' code.
            extra_arguments=["--HistoryManager.hist_file=:memory:"],
            sandbox=self.sandbox,
        )

    def limits(self, timeout: float | None) -> ExecutionLimits:
        s = self.settings
        if timeout is not None and timeout > s.max_timeout:
            raise TimeoutTooLarge(f"timeout {timeout:g} s is above max_timeout ({s.max_timeout:g} s)")
        return ExecutionLimits(
            timeout=timeout or s.default_timeout,
            interrupt_grace=s.interrupt_grace,
            output_limit=s.output_limit,
            stream_window=s.stream_window_ms / 1000,
            stream_max_bytes=s.stream_max_bytes,
        )

    def start(self) -> None:
        warm_output_validation()
        for spec_name in set(self.languages.specs.values()):
            self.pool.warm(spec_name)

    async def stop(self) -> None:
        await self.sessions.close_all()
        await self.pool.close()
