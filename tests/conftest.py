"""Real servers, real kernels, real clients: the fixtures every test builds on."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import websockets

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GatewayServer:
    """`python -m gateway` in a child process on a free loopback port."""

    def __init__(self, env: dict[str, str] | None = None, **settings: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        extra = env or {}
        settings.setdefault("drain_timeout_s", 5)  # SIGTERM drains: within the 20 s stop() waits
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env.update({f"GATEWAY_{k.upper()}": _env_value(v) for k, v in settings.items()})
        env.update(extra)
        env["GATEWAY_PORT"] = str(self.port)
        self.log_path = Path(f"/tmp/gateway-test-{self.port}.log")
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway"], cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        self._wait_healthy(timeout=60)

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gateway not healthy within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()

    def kernel_pids(self) -> set[int]:
        """The gateway's descendants, and forked kernels whose template has gone (the host's
        init adopts them): every process whose command line names its runtime directories."""
        try:
            found = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            found = []
        mine = f"/icg/{self.proc.pid}/"
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if any(mine in arg for arg in proc.info["cmdline"] or []):
                    found += [proc, *proc.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        return {p.pid for p in found}

    def stop(self) -> set[int]:
        """SIGTERM, as an operator would; returns the kernel pids still alive afterwards."""
        pids = self.kernel_pids()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
        return _still_alive(pids, timeout=10)

    def health(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/health", timeout=5).json()


def running(pid: int) -> bool:
    """Whether the process runs: neither gone nor a zombie (it may go while we look)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _still_alive(pids: set[int], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if running(p)}
        time.sleep(0.1)
    return alive


def _env_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


@pytest.fixture(scope="session")
def server() -> Iterator[GatewayServer]:
    """One gateway shared by the tests that need no special settings."""
    srv = GatewayServer(pool_size=2, session_grace_s=0)
    yield srv
    left = srv.stop()
    assert not left, f"kernel processes left after shutdown: {left}"


@pytest.fixture
async def http(server: GatewayServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        yield client


class Client:
    """A WebSocket client speaking the icotes protocol, every wait bounded."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.session: dict[str, Any] = {}

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))

    async def recv(self, timeout: float = 30) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.ws.recv(), timeout))

    async def until(self, predicate: Any, timeout: float = 60) -> list[dict[str, Any]]:
        """Every frame received up to and including the first one `predicate` accepts."""
        frames = []
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.recv(max(0.01, deadline - time.monotonic()))
            frames.append(frame)
            if predicate(frame):
                return frames

    async def run(self, code: str, id: str = "r", wait: float = 60, **extra: Any) -> list[dict[str, Any]]:
        """Execute and return every frame about `id` through its execution_result."""
        await self.send({"type": "execute_code", "code": code, "id": id, **extra})
        frames = await self.until(
            lambda f: f.get("type") == "execution_result" and f.get("id") == id, wait
        )
        return [f for f in frames if f.get("id") == id]


@asynccontextmanager
async def connect(server: GatewayServer, path: str = "/ws", **kwargs: Any) -> AsyncIterator[Client]:
    kwargs.setdefault("max_size", 2**26)  # results carry every output; browsers set no limit
    async with websockets.connect(server.ws_url + path, open_timeout=60, **kwargs) as ws:
        client = Client(ws)
        client.session = await client.recv(60)
        assert client.session["type"] == "session", client.session
        yield client


# Printed by a kernel: its connection file, which names it in the host's process table even
# when it runs in a PID namespace of its own (where its pid means nothing to us).
WHOAMI = "import sys; print(sys.argv[sys.argv.index('-f') + 1])"


def processes_of(connection_file: str) -> list[psutil.Process]:
    """Every host process of the kernel: the wrappers, bwrap and the kernel itself."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if connection_file in (proc.info["cmdline"] or []) and proc.status() != "zombie":
                found.append(proc)
        except psutil.NoSuchProcess:
            pass
    return found


async def wait_gone(connection_file: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while processes_of(connection_file):
        assert time.monotonic() < deadline, f"kernel {connection_file} still has processes"
        await asyncio.sleep(0.1)


def result_of(frames: list[dict[str, Any]]) -> dict[str, Any]:
    assert frames[-1]["type"] == "execution_result", frames[-1]
    return frames[-1]
