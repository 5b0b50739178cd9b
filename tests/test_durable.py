"""Sessions that survive disconnects: seq numbers, replay, gaps, takeover, grace, culling, limits."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets

from .conftest import GatewayServer, connect, result_of


@pytest.fixture(scope="module")
def durable() -> Iterator[GatewayServer]:
    srv = GatewayServer(pool_size=2, session_grace_s=300, session_log_frames=10000)
    yield srv
    assert not srv.stop()


def stdout_of(frames: list[dict[str, Any]]) -> str:
    return "".join(
        f["output"]["text"] for f in frames
        if f["type"] == "output" and f["output"]["output_type"] == "stream" and f["output"]["name"] == "stdout"
    )


def assert_contiguous(frames: list[dict[str, Any]]) -> None:
    seqs = [f["seq"] for f in frames]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "seq has a gap or a repeat"


async def test_every_frame_after_the_handshake_has_a_seq(durable: GatewayServer) -> None:
    async with connect(durable) as client:
        assert client.session["last_seq"] == 0
        frames = await client.run("print(1)")
        await client.send({"type": "ping"})
        frames.append(await client.recv())
        assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
        await client.send({"type": "close_session"})


async def test_reconnect_replays_every_missed_frame_once_in_order(durable: GatewayServer) -> None:
    code = "import time\nfor i in range(1, 1001):\n    print(i, flush=True)\n    time.sleep(0.002)"
    async with connect(durable) as client:
        sid = client.session["session_id"]
        await client.send({"type": "execute_code", "code": code, "id": "loop"})
        before = await client.until(lambda f: f["type"] == "output")
        while len(before) < 5:
            before.append(await client.recv())
        client.ws.transport.abort()  # the network goes away: no close frame
    last_seq = before[-1]["seq"]
    await asyncio.sleep(0.5)  # output goes on meanwhile
    async with connect(durable, f"/ws?session_id={sid}&last_seq={last_seq}") as again:
        assert again.session["resumed"] is True and "lost" not in again.session
        after = await again.until(lambda f: f["type"] == "execution_result" and f.get("id") == "loop", 60)
        await again.send({"type": "close_session"})
    frames = before + after
    assert_contiguous(frames)
    assert after[0]["seq"] == last_seq + 1
    assert again.session["replayed"] >= 1
    assert stdout_of(frames).split() == [str(i) for i in range(1, 1001)]


async def test_a_bare_ws_session_outlives_its_socket_for_the_grace_period(durable: GatewayServer) -> None:
    async with connect(durable) as client:
        sid = client.session["session_id"]
        await client.run("kept = 'still here'")
    async with httpx.AsyncClient(base_url=durable.url) as http:
        assert (await http.get(f"/sessions/{sid}")).json()["connections"] == 0
    async with connect(durable, f"/ws?session_id={sid}") as again:
        assert result_of(await again.run("print(kept)", "k"))["output"] == ["still here"]
        await again.send({"type": "close_session"})
        with pytest.raises(websockets.ConnectionClosed):
            await again.recv(10)
    async with httpx.AsyncClient(base_url=durable.url) as http:
        assert (await http.get(f"/sessions/{sid}")).status_code == 404


async def test_a_second_socket_takes_the_session_over(durable: GatewayServer) -> None:
    async with connect(durable) as first:
        sid = first.session["session_id"]
        async with connect(durable, f"/ws?session_id={sid}") as second:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await first.recv(10)
            assert closed.value.rcvd.code == 4409
            assert result_of(await second.run("print('mine now')"))["output"] == ["mine now"]
            await second.send({"type": "close_session"})


async def test_icotes_bare_ws_works_as_before(durable: GatewayServer) -> None:
    async with websockets.connect(durable.ws_url + "/ws", open_timeout=30) as ws:
        assert json.loads(await ws.recv())["type"] == "session"
        await ws.send(json.dumps({"type": "execute_code", "code": "print('hi')", "language": "python"}))
        while (frame := json.loads(await asyncio.wait_for(ws.recv(), 30)))["type"] != "execution_result":
            pass
        assert frame["output"] == ["hi"]


async def test_acked_frames_leave_the_log_and_the_rest_replay(durable: GatewayServer) -> None:
    async with connect(durable) as client:
        sid = client.session["session_id"]
        first = await client.run("print('a')", "a")
        second = await client.run("print('b')", "b")
        acked = first[-1]["seq"]
        await client.send({"type": "ack", "seq": second[-1]["seq"] + 100})
        refused = await client.recv()
        assert refused["type"] == "error" and "newest frame sent" in refused["message"]
        await client.send({"type": "ack", "seq": -1})
        assert (await client.recv())["type"] == "error"
        await client.send({"type": "ack", "seq": acked})
        await client.send({"type": "ping"})
        await client.until(lambda f: f["type"] == "pong")
    async with connect(durable, f"/ws?session_id={sid}&last_seq={acked}") as again:
        # Exactly what came after the ack is replayed, and nothing is reported lost.
        assert "lost" not in again.session
        replay = [await again.recv() for _ in range(again.session["replayed"])]
        assert replay[0]["seq"] == acked + 1 and replay[-1]["seq"] == again.session["last_seq"]
        assert_contiguous(replay)
        results = [f for f in replay if f["type"] == "execution_result"]
        assert [r["output"] for r in results] == [["b"]]
        assert replay[-1]["type"] == "pong"
    async with connect(durable, f"/ws?session_id={sid}&last_seq=0") as behind:
        # A client behind its own ack is told the acked frames are gone.
        assert behind.session["lost"] == {"from_seq": 1, "to_seq": acked}
        await behind.send({"type": "close_session"})


async def test_log_overflow_is_reported_as_a_gap() -> None:
    server = GatewayServer(pool_size=1, session_log_frames=20)
    try:
        code = "import time\nfor i in range(60):\n    print(i, flush=True)\n    time.sleep(0.03)"
        async with connect(server) as client:
            sid = client.session["session_id"]
            await client.send({"type": "execute_code", "code": code, "id": "g"})
            first = await client.until(lambda f: f["type"] == "output")
        last_seq = first[-1]["seq"]
        async with httpx.AsyncClient(base_url=server.url) as http:
            deadline = time.monotonic() + 30
            while (await http.get(f"/sessions/{sid}")).json()["execution_state"] != "idle":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        async with connect(server, f"/ws?session_id={sid}&last_seq={last_seq}") as again:
            lost = again.session["lost"]
            assert lost["from_seq"] == last_seq + 1
            replay = [await again.recv() for _ in range(again.session["replayed"])]
            assert replay[0]["seq"] == lost["to_seq"] + 1
            assert replay[-1]["seq"] == again.session["last_seq"]
            assert len(replay) == 20 and replay[-1]["type"] == "execution_result"
            assert_contiguous(replay)
    finally:
        assert not server.stop()


async def test_idle_sessions_are_culled_and_busy_ones_are_not() -> None:
    server = GatewayServer(pool_size=2, idle_timeout_s=1, cull_interval_s=0.2)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            idle = (await http.post("/sessions")).json()["id"]
            busy = (await http.post("/sessions")).json()["id"]
            running = asyncio.create_task(
                http.post(f"/sessions/{busy}/execute", json={"code": "import time; time.sleep(3)"})
            )
            await asyncio.sleep(2.5)
            assert (await http.get(f"/sessions/{idle}")).status_code == 404, "idle session not culled"
            assert (await http.get(f"/sessions/{busy}")).status_code == 200, "busy session was culled"
            assert (await running).json()["status"] == "ok"
            deadline = time.monotonic() + 10
            while (await http.get(f"/sessions/{busy}")).status_code != 404:
                assert time.monotonic() < deadline, "session not culled once idle"
                await asyncio.sleep(0.2)
    finally:
        assert not server.stop()


async def test_a_burst_over_the_limit_gets_clean_refusals() -> None:
    server = GatewayServer(pool_size=1, max_sessions=3, session_grace_s=0)
    try:
        peak = 0

        async def watch() -> None:
            nonlocal peak
            async with httpx.AsyncClient(base_url=server.url) as http:
                while True:
                    peak = max(peak, (await http.get("/health")).json()["sessions"])
                    await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch())
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            responses = await asyncio.gather(*(http.post("/sessions") for _ in range(8)))
            codes = sorted(r.status_code for r in responses)
            assert codes == [201] * 3 + [503] * 5, codes
            assert (await http.get("/health")).json()["sessions"] == 3
            refused = next(r for r in responses if r.status_code == 503)
            assert refused.headers["retry-after"] and "max_sessions" in refused.json()["detail"]
            async with websockets.connect(server.ws_url + "/ws", open_timeout=30) as ws:
                assert json.loads(await ws.recv())["type"] == "error"
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 10)
                assert closed.value.rcvd.code == 1013
            for r in responses:
                if r.status_code == 201:
                    await http.delete(f"/sessions/{r.json()['id']}")
        watcher.cancel()
        assert 1 <= peak <= 3, f"the watcher saw {peak} sessions at most"  # it ran, and saw no overshoot
    finally:
        assert not server.stop()
