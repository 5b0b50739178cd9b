"""The servers under measurement, each on a free loopback port: ours and Kernel Gateway."""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}"
        self.log = Path(f"/tmp/bench-{name}-{port}.log")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        self._wait(60)

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
            try:
                httpx.get(self.url + "/api" if self.name == "kernel_gateway" else self.url + "/health", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not come up")

    def cpu_seconds(self) -> float:
        """CPU the server process itself has used (its kernels are other processes)."""
        times = psutil.Process(self.proc.pid).cpu_times()
        return times.user + times.system

    def rss(self) -> int:
        return psutil.Process(self.proc.pid).memory_info().rss

    def processes(self) -> list[psutil.Process]:
        """The server's descendants, and forked kernels whose template has gone, which the
        host's init adopts (their command lines name the server's runtime directories)."""
        found = psutil.Process(self.proc.pid).children(recursive=True)
        mine = f"/icg/{self.proc.pid}/"
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if proc not in found and any(mine in arg for arg in proc.info["cmdline"] or []):
                    found.append(proc)
            except psutil.NoSuchProcess:
                pass
        return found

    def kernels(self) -> list[psutil.Process]:
        """Each kernel process (not the small wrappers or init around a confined one)."""
        out = []
        for proc in self.processes():
            try:
                if "ipykernel_launcher" in proc.cmdline()[:3]:
                    out.append(proc)
            except psutil.NoSuchProcess:
                pass
        return out

    def kernel_rss(self) -> list[int]:
        return [p.memory_info().rss for p in self.kernels() if p.is_running()]

    def total_pss(self) -> int:
        """PSS of the server and every process it runs: what it costs the host in memory,
        shared pages split among those sharing them."""
        return pss(self.proc.pid) + sum(pss(p.pid) for p in self.processes())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                for child in psutil.Process(self.proc.pid).children(recursive=True):
                    child.kill()
                self.proc.kill()


def pss(pid: int) -> int:
    """Proportional set size, from /proc/PID/smaps_rollup; 0 for a process gone."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@functools.cache
def kernelspecs() -> Path:
    """A Jupyter data folder whose python3 kernelspec runs the kernel environment the
    gateway's kernels run (start.sh bench says where it is): every system gets the same."""
    env = os.environ["GATEWAY_KERNEL_ENV"]
    root = Path(tempfile.mkdtemp(prefix="bench-kernelspecs-"))
    (root / "kernels" / "python3").mkdir(parents=True)
    spec = {
        "argv": [f"{env}/bin/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (the kernel environment)", "language": "python",
    }
    (root / "kernels" / "python3" / "kernel.json").write_text(json.dumps(spec))
    return root


def ours(pool_size: int = 2, extra_env: dict[str, str] | None = None, **settings: str) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(extra_env or {})
    env.update(
        GATEWAY_PORT=str(port), GATEWAY_POOL_SIZE=str(pool_size), GATEWAY_LOG_LEVEL="warning",
        GATEWAY_KERNEL_ENV=os.environ["GATEWAY_KERNEL_ENV"],
        **{f"GATEWAY_{key.upper()}": value for key, value in settings.items()},
    )
    # The gateway as it ships: its own environment (start.sh bench says where), not ours.
    python = os.environ.get("GATEWAY_PYTHON", sys.executable)
    return Server("ours", [python, "-m", "gateway"], env, port)


def kernel_gateway() -> Server:
    port = free_port()
    argv = [
        sys.executable, "-m", "kernel_gateway",
        f"--KernelGatewayApp.port={port}", "--KernelGatewayApp.ip=127.0.0.1",
        "--KernelGatewayApp.log_level=WARN",
    ]
    return Server("kernel_gateway", argv, {**os.environ, "JUPYTER_PATH": str(kernelspecs())}, port)
