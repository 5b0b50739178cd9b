"""schemathesis against the gateway's own OpenAPI schema: no 5xx, no hung request."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import GatewayServer

TOKEN = "fuzz-token"


def test_schemathesis_finds_no_server_error_and_no_hang() -> None:
    # Capacity high enough that every session the fuzzer creates fits: 503 means "full",
    # and that is not what we are looking for here.
    server = GatewayServer(pool_size=2, token=TOKEN, max_sessions=1000, max_kernels=1000, session_grace_s=0)
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    try:
        proc = subprocess.run(
            [
                cli, "run", f"{server.url}/openapi.json",
                "--header", f"Authorization: Bearer {TOKEN}",
                "--checks", "not_a_server_error",
                "--phases", "examples,coverage,fuzzing",
                "--max-examples", "8",
                "--request-timeout", "60",  # a hung request fails the run
                "--seed", "1",
                "--no-shrink",
                "--suppress-health-check", "all",
            ],
            capture_output=True, text=True, timeout=600,
        )
        assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    finally:
        assert not server.stop()
