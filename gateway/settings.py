"""All settings in one place: environment variables `GATEWAY_*`, or flags of `python -m gateway`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kernels.environment import default_path
from kernels.execution import LimitsConfig
from kernels.pool import PoolConfig
from kernels.remote import RemoteConfig
from kernels.sandbox import SandboxConfig


def _default_kernel_env() -> str | None:
    """The kernel environment start.sh builds, if it is there."""
    path = default_path()
    return str(path) if path.is_dir() else None


class Settings(BaseSettings, SandboxConfig, LimitsConfig, PoolConfig, RemoteConfig):
    """The gateway's own settings, and those of the kernel layer's sections as they are
    (SandboxConfig: the confinement; LimitsConfig: each execution's; PoolConfig: the warm
    pool; RemoteConfig: kernels placed elsewhere), so each has one name, default and description."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", cli_kebab_case=True)

    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, description="port to listen on")
    log_level: str = Field("info", description="logging level: debug, info, warning, error")
    log_format: Literal["text", "json"] = Field("text", description="log lines as text, or as JSON objects carrying the session, kernel and request ids")
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

    kernel_startup_timeout: float = Field(30.0, gt=0, description="seconds for a kernel to become ready")

    request_timeout: float = Field(10.0, gt=0, description="seconds to wait for completion and inspection replies")
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
    client_max_sessions: int | None = Field(None, gt=0, description="sessions one client (token) may have open; default: max_sessions with one client, half of it with several")
    client_max_kernels: int | None = Field(None, gt=0, description="kernels one client may hold; default: max_kernels with one client, half of it with several")
    client_starts_per_minute: int | None = Field(
        None, ge=0, description="kernels one client may take per minute (sessions, one-shot runs, restarts, new languages); 0: no limit; default: none with one client, 60 with several",
    )
    max_body_bytes: int = Field(2 * 2**20, gt=0, description="largest request body")
    max_message_bytes: int = Field(2 * 2**20, gt=0, description="largest WebSocket message")
    max_upload_bytes: int = Field(256 * 2**20, gt=0, description="largest file upload (PUT /sessions/{id}/files/...); the kernel's home has its own size too")
    file_timeout_s: float = Field(30.0, gt=0, description="seconds a kernel has to answer each step of a file request")
    drain_timeout_s: float = Field(30.0, ge=0, description="on SIGTERM, how long running executions may finish before clients are told and kernels shut down")
    otlp_endpoint: str | None = Field(None, description="OTLP/HTTP traces endpoint (http://collector:4318/v1/traces): a span per execution; unset: no tracing")
    metrics_public: bool = Field(False, description="serve /metrics without the token (for a scraper on a trusted network)")
    mcp_enabled: bool = Field(True, description="serve the MCP endpoint at /mcp (behind the same tokens)")
    mcp_max_text_chars: int = Field(20000, gt=0, description="text an MCP tool result carries at most (outputs, errors); the rest is cut, and said so")
    mcp_max_image_bytes: int = Field(2 * 2**20, gt=0, description="images (decoded) an MCP tool result carries at most; the rest are left out, and said so")
    kernel_env_allowlist: list[str] = Field(default=[], description="variables besides KERNEL_* that POST /api/kernels may pass to a kernel")
    store_url: str | None = Field(None, description="the session store gateway replicas share (redis://host:port/db); unset: this gateway alone, sessions in memory")
    store_secret: str | None = Field(None, description="the replicas' shared secret (required with store_url): seals kernels' connection keys in the store, vouches for forwarded requests")
    replica_address: str | None = Field(None, description="how other replicas reach this one (http://host:port); default: http://<host>:<port>")
    replica_heartbeat_s: float = Field(0.5, gt=0, description="how often a replica tells the store it is alive, and looks for dead ones")
    replica_ttl_s: float = Field(1.5, gt=0, description="a replica silent this long is dead: another takes its sessions over")

    @model_validator(mode="after")
    def _store_needs_secret(self) -> Settings:
        if self.store_url and not self.store_secret:
            raise ValueError("GATEWAY_STORE_SECRET is required with GATEWAY_STORE_URL (the same on every replica)")
        if self.replica_ttl_s <= 2 * self.replica_heartbeat_s:
            raise ValueError("replica_ttl_s must be above twice replica_heartbeat_s, or a live replica looks dead")
        return self

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
