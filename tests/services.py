"""Services the replica tests start for themselves, each on a free loopback port and stopped
afterwards: Redis (the replicas' shared store) and haproxy (round robin in front of them)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early ({proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{what} not listening on {port} within {timeout} s")


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if it does not end within 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


class Redis:
    """redis-server, in memory only (no dump file), on a free loopback port."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is missing: ./start.sh test installs it (apt-get, as root)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.TemporaryDirectory(prefix="icg-redis-")
        self._argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                      "--dir", self._dir.name, "--protected-mode", "yes"]
        self.start()

    def start(self) -> None:
        """(Again, after `kill`: empty, on the same port.)"""
        self.proc = subprocess.Popen(self._argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, self.proc, "redis-server")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        _terminate(self.proc)
        self._dir.cleanup()


class Haproxy:
    """haproxy, round robin over `backends` (host:port), no stickiness; WebSockets pass as
    upgraded HTTP. A backend that refuses connections is skipped on retry."""

    def __init__(self, backends: list[str]) -> None:
        binary = shutil.which("haproxy")
        if binary is None:
            raise RuntimeError("haproxy is missing: ./start.sh test installs it (apt-get, as root)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self._dir = tempfile.TemporaryDirectory(prefix="icg-haproxy-")
        config = Path(self._dir.name) / "haproxy.cfg"
        servers = "\n".join(f"    server r{i} {b} check inter 500ms fall 1 rise 1" for i, b in enumerate(backends))
        config.write_text(f"""\
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 120s
    retries 2
    option redispatch

frontend gateway
    bind 127.0.0.1:{self.port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /health
{servers}
""")
        self.proc = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, self.proc, "haproxy")

    def stop(self) -> None:
        _terminate(self.proc)
        self._dir.cleanup()
