"""All settings in one place: environment variables `GATEWAY_*`, or flags of `python -m gateway`."""

from __future__ import annotations

import os

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kernels.environment import default_path


def _host_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _default_kernel_env() -> str | None:
    """The kernel environment start.sh builds, if it is there."""
    path = default_path()
    return str(path) if path.is_dir() else None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", cli_kebab_case=True)

    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, description="port to listen on")
    log_level: str = Field("info", description="logging level: debug, info, warning, error")
    cors_origins: list[str] = Field(
        default=[
            "http://localhost:5173",
            "http://127.0.0.1:5173",
            "http://localhost:3000",
            "http://127.0.0.1:3000",
        ],
        description="browser origins allowed to use the gateway, besides its own (JSON list in the environment)",
    )
    allowed_hosts: list[str] = Field(
        default=[],
        description="host names served besides IP addresses and loopback names ('*': any); others get 403, which stops DNS rebinding",
    )

    languages: dict[str, str] = Field(
        default={"python": "python3", "python3": "python3", "bash": "bash", "sh": "bash"},
        description="language name -> kernelspec name (JSON object in the environment)",
    )
    default_language: str = Field("python", description="language when a request names none")
    kernel_env: str | None = Field(
        default_factory=_default_kernel_env,
        description="the kernel environment (a venv or conda env): kernels run the kernelspecs in its share/jupyter/kernels; default: the one start.sh builds",
    )
    kernelspec_dirs: list[str] = Field(default=[], description="more directories of kernelspecs (Jupyter's layout: one folder per kernel with its kernel.json)")
    kernel_mounts: list[str] = Field(default=[], description="host paths every confined kernel sees read-only, besides its kernelspec's own environment")

    pool_size: int = Field(2, ge=0, description="ready kernels kept per kernelspec")
    pool_max_parallel_starts: int = Field(2, ge=1, description="kernels booting at once, at most")
    kernel_startup_timeout: float = Field(30.0, gt=0, description="seconds for a kernel to become ready")
    kernel_acquire_timeout: float = Field(60.0, gt=0, description="seconds a request waits for a kernel")

    default_timeout: float = Field(300.0, gt=0, description="execution time-out in seconds when a request gives none")
    max_timeout: float = Field(3600.0, gt=0, description="largest time-out a request may ask for")
    interrupt_grace: float = Field(3.0, gt=0, description="seconds after a time-out's interrupt before the kernel is restarted")
    request_timeout: float = Field(10.0, gt=0, description="seconds to wait for completion and inspection replies")
    output_limit: int = Field(10_000_000, gt=0, description="bytes of output per execution; the rest is dropped and counted")
    stream_window_ms: float = Field(15.0, ge=0, description="stream output is coalesced into one frame per this many ms")
    stream_max_bytes: int = Field(65536, gt=0, description="...or per this many bytes")
    sandbox: str = Field("auto", pattern="^(auto|strict|off)$", description="kernel confinement: auto (what the host allows, with warnings), strict (all or refuse to start), off")
    memory_limit_bytes: int = Field(2 * 2**30, gt=0, description="cgroup memory limit per kernel")
    pids_limit: int = Field(256, gt=0, description="cgroup limit on processes and threads per kernel")
    kernels_memory_bytes: int = Field(
        default_factory=lambda: _host_memory() * 4 // 5, gt=0,
        description="cgroup memory limit on all kernels together (default: 80% of the host's memory)",
    )
    kernels_pids_limit: int = Field(8192, gt=0, description="cgroup limit on processes and threads of all kernels together")
    cpu_weight: int = Field(100, ge=1, le=10000, description="each kernel's CPU share (cgroup cpu.weight; 100 is the default): one kernel's loop gets no more CPU than another kernel")
    address_space_bytes: int = Field(4 * 2**30, gt=0, description="RLIMIT_AS per kernel (an idle kernel maps ~800 MB)")
    cpu_seconds: int = Field(3600, gt=0, description="RLIMIT_CPU soft limit per kernel; the hard limit is 60 s above")
    nproc_limit: int = Field(256, gt=0, description="RLIMIT_NPROC per kernel uid")
    file_size_bytes: int = Field(256 * 2**20, gt=0, description="RLIMIT_FSIZE: the largest file a kernel may write")
    open_files: int = Field(1024, gt=0, description="RLIMIT_NOFILE per kernel")
    tmp_bytes: int = Field(256 * 2**20, gt=0, description="size of each kernel's private /tmp")
    scratch_bytes: int = Field(512 * 2**20, gt=0, description="size of each kernel's private home directory")
    kernel_uid_base: int = Field(61000, ge=1000, description="kernels run as uids from here up (where the gateway is root); give gateways sharing a host distinct ranges")
    kernel_network: bool = Field(False, description="let kernels reach the network (default: isolated)")
    token: str | None = Field(None, description="bearer token every endpoint but /health requires; generated when serving beyond loopback without one")
    tokens: dict[str, str] = Field(default={}, description="per-client tokens, name -> token (JSON object); each client sees only its own sessions")
    allow_unauthenticated: bool = Field(False, description="serve beyond loopback without a token (not recommended)")
    session_grace_s: float = Field(300.0, ge=0, description="a /ws session lives this long after its socket closes (0: ends with it)")
    idle_timeout_s: float = Field(1800.0, gt=0, description="sessions with no socket and no activity this long are shut down")
    cull_busy: bool = Field(False, description="cull idle-timed-out sessions even while they run code")
    cull_interval_s: float = Field(10.0, gt=0, description="how often to look for sessions to cull")
    session_log_frames: int = Field(10000, gt=0, description="frames kept per session for clients that reconnect...")
    session_log_bytes: int = Field(4 * 2**20, gt=0, description="...and at most this many bytes of them")
    max_sessions: int = Field(100, gt=0, description="live sessions at most, starting ones included")
    max_kernels: int = Field(120, gt=0, description="kernels in use at most (sessions and one-shot runs, starting ones included)")
    client_max_sessions: int | None = Field(None, gt=0, description="sessions one client (token) may have open; default: max_sessions with one client, half of it with several")
    client_max_kernels: int | None = Field(None, gt=0, description="kernels one client may hold; default: max_kernels with one client, half of it with several")
    client_starts_per_minute: int | None = Field(
        None, ge=0, description="kernels one client may take per minute (sessions, one-shot runs, restarts, new languages); 0: no limit; default: none with one client, 60 with several",
    )
    max_body_bytes: int = Field(2 * 2**20, gt=0, description="largest request body")
    max_message_bytes: int = Field(2 * 2**20, gt=0, description="largest WebSocket message")
    max_code_bytes: int = Field(1 * 2**20, gt=0, description="largest piece of code")
    kernel_env_allowlist: list[str] = Field(default=[], description="variables besides KERNEL_* that POST /api/kernels may pass to a kernel")
    def clients(self) -> int:
        """How many clients tokens name (one when there are none: everybody is one client)."""
        return max(1, len(self.tokens) + (1 if self.token and self.token not in self.tokens.values() else 0))

    ws_compression: bool = Field(False, description="permessage-deflate on WebSockets (saves bandwidth on big outputs, costs CPU on every frame)")
    send_queue_frames: int = Field(256, gt=0, description="frames queued per WebSocket before producers wait")
    jupyter_queue_bytes: int = Field(
        16 * 2**20, gt=0,
        description="bytes of kernel messages queued for all Jupyter-protocol sockets of one kernel; past it they are dropped, as ZMQ drops iopub",
    )
    jupyter_gateway_queue_bytes: int = Field(128 * 2**20, gt=0, description="...and for those of all kernels together")
    jupyter_sockets_per_kernel: int = Field(8, gt=0, description="Jupyter-protocol sockets open on one kernel at most")
    jupyter_sockets_per_client: int = Field(32, gt=0, description="Jupyter-protocol sockets one client (token) has open at most")
