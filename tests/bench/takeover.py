"""Row 10, issue 15's figure: from a replica's SIGKILL to its sessions answering again.

Two replicas share a Redis; sessions whose kernels are on the SSH host are opened on one,
which is then SIGKILLed. Each session's client reconnects to the other replica (with its
`last_seq`, retrying while the session moves) and runs `x`: the time from the kill to that
result, per session. Beside it, what the client would pay without takeover: a new session on
the SSH host to its first result (its state gone). Rounds alternate which replica dies.
Also: warm `1+1` on a local kernel of a replica with the store on (every frame kept in Redis
too) beside a gateway with it off, in alternating blocks.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import websockets

from ..services import Redis
from ..ssh_host import SPEC as SSH_SPEC
from ..ssh_host import SshHost
from . import servers
from .drivers import OursSession, alternating

_TIMEOUT = 60


async def takeover_rows(sessions: int, rounds: int) -> dict[str, Any]:
    kernel_python = str(Path(os.environ["GATEWAY_KERNEL_ENV"]) / "bin" / "python")
    host = SshHost(kernel_python, tools=Path(os.environ.get("GATEWAY_PYTHON", sys.executable)).parent)
    store = Redis()
    replicas: list[servers.Server] = []

    def replica() -> servers.Server:
        return servers.ours(
            pool_size=1, extra_env=host.gateway_env(servers.free_port()), store_url=store.url, store_secret="bench",
            kernelspec_dirs=json.dumps([str(host.specs)]), languages=json.dumps({"python": "python3", "ssh": SSH_SPEC}),
        )

    try:
        replicas = [replica(), replica()]
        warm = await _store_on_and_off(replicas[0])
        answered: list[float] = []
        for n in range(rounds):
            doomed, survivor = replicas[n % 2], replicas[1 - n % 2]
            answered += await _one_round(doomed, survivor, sessions)
            replicas[n % 2] = replica()
        new_session = await _new_session_ms(replicas[0], rounds)
        return {
            "answered_ms": {"p50": statistics.median(answered) * 1000, "max": max(answered) * 1000},
            "new_session_ms": new_session,
            "sessions": len(answered),
            "warm_p50_ms": warm,
        }
    finally:
        for r in replicas:
            r.stop()
        store.stop()
        host.stop()


async def _one_round(doomed: servers.Server, survivor: servers.Server, sessions: int) -> list[float]:
    held = []
    for _ in range(sessions):
        ws = await websockets.connect(doomed.ws_url + "/ws?language=ssh", max_size=None, open_timeout=_TIMEOUT)
        session_id = json.loads(await asyncio.wait_for(ws.recv(), _TIMEOUT))["session_id"]
        last_seq = await _run(ws, "x = 1", "setup")
        held.append((ws, session_id, last_seq))
    doomed.proc.kill()
    killed = time.perf_counter()
    doomed.proc.wait(10)
    for ws, *_ in held:
        await ws.close()
    return await asyncio.gather(*(_answered(survivor, sid, seq, killed) for _, sid, seq in held))


async def _answered(survivor: servers.Server, session_id: str, last_seq: int, killed: float) -> float:
    """Seconds from the kill until the session, reached through the survivor, answers `x`."""
    deadline = killed + _TIMEOUT
    while time.perf_counter() < deadline:
        try:
            url = f"{survivor.ws_url}/ws?session_id={session_id}&last_seq={last_seq}"
            async with websockets.connect(url, max_size=None, open_timeout=_TIMEOUT) as ws:
                if json.loads(await asyncio.wait_for(ws.recv(), _TIMEOUT))["type"] == "session":
                    await _run(ws, "x", "check")
                    answered = time.perf_counter() - killed
                    await ws.send(json.dumps({"type": "close_session"}))
                    return answered
        except (OSError, websockets.ConnectionClosed, websockets.InvalidHandshake):
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError(f"session {session_id} did not answer within {_TIMEOUT} s of the kill")


async def _run(ws: Any, code: str, rid: str) -> int:
    await ws.send(json.dumps({"type": "execute_code", "code": code, "id": rid}))
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), _TIMEOUT))
        if frame["type"] == "execution_result" and frame.get("id") == rid:
            if frame["status"] != "ok":
                raise RuntimeError(f"{code!r}: {frame}")
            return frame["seq"]


async def _store_on_and_off(replica: servers.Server, blocks: int = 6, runs: int = 200) -> dict[str, float]:
    """Warm `1+1` p50 on the replica and on a gateway without a store, taking turns."""
    alone = servers.ours(pool_size=1)
    try:
        sessions = {
            "store_on": await OursSession.open(replica.ws_url, language="python"),
            "store_off": await OursSession.open(alone.ws_url, language="python"),
        }
        return await alternating(sessions, blocks, runs)
    finally:
        alone.stop()


async def _new_session_ms(replica: servers.Server, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session = await OursSession.open(replica.ws_url, language="ssh")
        await session.run("x = 1")
        times.append(time.perf_counter() - start)
        await session.close()
    return statistics.median(times) * 1000
