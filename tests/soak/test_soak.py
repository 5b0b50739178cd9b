"""A bounded soak: 20 sessions, random disconnects and reconnects, 2000 executions.

Every session must see each of its frames exactly once, in order (seq without gap or repeat
across all its sockets), every execution's result once and right, and no kernel may leak.
`SOAK_EXECUTIONS` scales it (default 2000 in all).
"""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

import httpx
import websockets

from ..conftest import Client, GatewayServer, connect

SESSIONS = 20
EXECUTIONS = int(os.environ.get("SOAK_EXECUTIONS", "2000"))


class Tally:
    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.results: dict[str, list[dict[str, Any]]] = {}

    def take(self, frame: dict[str, Any]) -> None:
        self.seqs.append(frame["seq"])
        if frame["type"] == "execution_result":
            self.results.setdefault(frame["id"], []).append(frame)


async def soak_one(server: GatewayServer, n: int, runs: int, rng: random.Random) -> Tally:
    tally = Tally()
    session_id: str | None = None
    client: Client | None = None
    stack = None
    for i in range(runs):
        if client is None:
            path = "/ws" if session_id is None else f"/ws?session_id={session_id}&last_seq={tally.seqs[-1] if tally.seqs else 0}"
            stack = connect(server, path)
            client = await stack.__aenter__()
            session_id = client.session["session_id"]
        rid = f"{n}-{i}"
        await client.send({"type": "execute_code", "code": f"print({i} * {n})", "id": rid})
        drop = rng.random() < 0.1  # one run in ten loses its socket before the result
        while rid not in tally.results:
            try:
                frame = await client.recv(60)
            except websockets.ConnectionClosed:
                frame = None
            if frame is None or (drop and frame["type"] == "status"):
                client.ws.transport.abort()
                await stack.__aexit__(None, None, None)
                last = tally.seqs[-1] if tally.seqs else 0
                stack = connect(server, f"/ws?session_id={session_id}&last_seq={last}")
                client = await stack.__aenter__()
                assert "lost" not in client.session
                drop = False
                continue
            tally.take(frame)
    await client.send({"type": "close_session"})
    await stack.__aexit__(None, None, None)
    for i in range(runs):
        results = tally.results[f"{n}-{i}"]
        assert len(results) == 1, f"session {n} run {i}: {len(results)} results"
        assert results[0]["output"] == [str(i * n)]
    assert tally.seqs == list(range(1, len(tally.seqs) + 1)), f"session {n}: seq gap or repeat"
    return tally


async def test_soak_no_lost_or_duplicated_frames_and_no_leaked_kernels() -> None:
    server = GatewayServer(pool_size=2, session_grace_s=300)
    try:
        rng = random.Random(7)
        runs = EXECUTIONS // SESSIONS
        tallies = await asyncio.gather(
            *(soak_one(server, n, runs, random.Random(rng.random())) for n in range(SESSIONS))
        )
        assert sum(len(t.results) for t in tallies) == runs * SESSIONS
        async with httpx.AsyncClient(base_url=server.url) as http:
            health = (await http.get("/health")).json()
        assert health["sessions"] == 0 and health["kernels"]["in_use"] == 0
    finally:
        assert not server.stop(), "kernels leaked"
