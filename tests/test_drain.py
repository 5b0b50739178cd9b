"""SIGTERM drains: new sessions and one-shots refused, running code let finish (within
`drain_timeout_s`), every client told with close 1012, then every kernel shut down; a second
SIGTERM stops at once."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest
import websockets

from .conftest import GatewayServer, connect, result_of


async def _until_busy(server: GatewayServer, session_id: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        for _ in range(100):
            if (await http.get(f"/sessions/{session_id}")).json()["execution_state"] == "busy":
                return
            await asyncio.sleep(0.05)
    raise AssertionError("never busy")


async def test_sigterm_lets_running_code_finish_then_tells_clients() -> None:
    srv = GatewayServer(pool_size=1, session_grace_s=0, drain_timeout_s=20, kernel_uid_base=76000)
    kernels = srv.kernel_pids()
    try:
        async with connect(srv) as ws:
            await ws.send({"type": "execute_code", "code": "import time; time.sleep(3); print('done')", "id": "slow"})
            await _until_busy(srv, ws.session["session_id"])
            srv.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            async with httpx.AsyncClient(base_url=srv.url, timeout=10) as http:
                refused = await http.post("/sessions")
                assert refused.status_code == 503 and "draining" in refused.json()["detail"]
                assert refused.headers["retry-after"]
                assert (await http.post("/execute", json={"code": "1"})).status_code == 503
            async with websockets.connect(f"{srv.ws_url}/ws", open_timeout=10) as other:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    while True:  # an error frame that says why, then the close
                        await asyncio.wait_for(other.recv(), 10)
                assert closed.value.rcvd.code == 1013
            frames = await ws.until(lambda f: f["type"] == "execution_result", 20)
            assert result_of(frames)["status"] == "ok" and result_of(frames)["output"] == ["done"]
            with pytest.raises(websockets.ConnectionClosed) as told:
                await ws.until(lambda f: False, 10)
            assert told.value.rcvd.code == 1012 and "restarting" in told.value.rcvd.reason
        srv.proc.wait(timeout=15)
    finally:
        assert not srv.stop()
    assert kernels and not any(p for p in kernels if _alive(p))


async def test_the_drains_time_limit_and_a_second_sigterm() -> None:
    for second in (False, True):
        srv = GatewayServer(pool_size=1, session_grace_s=0, drain_timeout_s=1 if not second else 60, kernel_uid_base=76500)
        try:
            async with connect(srv) as ws:
                await ws.send({"type": "execute_code", "code": "import time; time.sleep(120)", "id": "long"})
                await _until_busy(srv, ws.session["session_id"])
                started = time.monotonic()
                srv.proc.send_signal(signal.SIGTERM)
                if second:
                    await asyncio.sleep(0.5)
                    srv.proc.send_signal(signal.SIGTERM)  # now
                with pytest.raises(websockets.ConnectionClosed):
                    await ws.until(lambda f: False, 30)
            srv.proc.wait(timeout=20)
            assert time.monotonic() - started < 15  # not the 120 s of the code, nor the 60 s drain
        finally:
            assert not srv.stop()


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
