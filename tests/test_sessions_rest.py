"""Sessions over REST, NDJSON streaming, and WebSockets attached to REST sessions."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import websockets

from .conftest import WHOAMI, GatewayServer, connect, processes_of, result_of, wait_gone


async def test_rest_session_keeps_state_between_calls(http: httpx.AsyncClient) -> None:
    created = await http.post("/sessions", json={"language": "python"})
    assert created.status_code == 201
    sid = created.json()["id"]
    try:
        await http.post(f"/sessions/{sid}/execute", json={"code": "total = 40"})
        result = (await http.post(f"/sessions/{sid}/execute", json={"code": "total += 2\nprint(total)"})).json()
        assert result["output"] == ["42"] and result["execution_count"] == 2
        via_execute = (await http.post("/execute", json={"code": "print(total)", "session_id": sid})).json()
        assert via_execute["output"] == ["42"]
        info = (await http.get(f"/sessions/{sid}")).json()
        assert info["execution_state"] == "idle" and info["language"] == "python"
        assert {"created", "last_activity", "connections"} <= set(info)
        assert sid in [s["id"] for s in (await http.get("/sessions")).json()]
    finally:
        assert (await http.delete(f"/sessions/{sid}")).status_code == 204
    assert (await http.get(f"/sessions/{sid}")).status_code == 404


async def test_unknown_session_ids_get_404(http: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/sessions/nope"),
        ("DELETE", "/sessions/nope"),
        ("POST", "/sessions/nope/interrupt"),
        ("POST", "/sessions/nope/restart"),
    ]:
        response = await http.request(method, path)
        assert response.status_code == 404 and "nope" in response.json()["detail"], (method, path)
    response = await http.post("/sessions/nope/execute", json={"code": "1"})
    assert response.status_code == 404
    response = await http.post("/execute", json={"code": "1", "session_id": "nope"})
    assert response.status_code == 404


async def test_rest_interrupt_and_restart(http: httpx.AsyncClient) -> None:
    sid = (await http.post("/sessions")).json()["id"]
    try:
        await http.post(f"/sessions/{sid}/execute", json={"code": "keep = 1"})
        async with httpx.AsyncClient(base_url=str(http.base_url), timeout=60) as other:
            running = asyncio.create_task(other.post(f"/sessions/{sid}/execute", json={"code": "import time; time.sleep(30)"}))
            deadline = time.monotonic() + 10
            while (await http.get(f"/sessions/{sid}")).json()["execution_state"] != "busy":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert (await http.post(f"/sessions/{sid}/interrupt")).status_code == 200
            result = (await asyncio.wait_for(running, 10)).json()
        assert result["status"] == "interrupted"
        assert (await http.post(f"/sessions/{sid}/execute", json={"code": "print(keep)"})).json()["output"] == ["1"]
        assert (await http.post(f"/sessions/{sid}/restart")).json()["execution_state"] == "idle"
        after = (await http.post(f"/sessions/{sid}/execute", json={"code": "print(keep)"})).json()
        assert after["status"] == "error" and "NameError" in after["errors"][0]
    finally:
        await http.delete(f"/sessions/{sid}")


async def test_input_in_a_one_shot_run_fails_fast(http: httpx.AsyncClient) -> None:
    started = time.monotonic()
    result = (await http.post("/execute", json={"code": "input('x')", "timeout": 20})).json()
    assert time.monotonic() - started < 5
    assert result["status"] == "error"
    assert "StdinNotImplementedError" in result["errors"][-1]


async def test_ndjson_lines_arrive_before_the_execution_ends(http: httpx.AsyncClient) -> None:
    code = "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.7)"
    started = time.monotonic()
    arrivals = []
    async with http.stream("POST", "/execute", json={"code": code, "stream": True}) as response:
        assert response.headers["content-type"].startswith("application/x-ndjson")
        async for line in response.aiter_lines():
            if line:
                arrivals.append((time.monotonic() - started, json.loads(line)))
    first_output = next(t for t, f in arrivals if f["type"] == "output")
    end = arrivals[-1][0]
    assert arrivals[-1][1]["type"] == "execution_result"
    assert arrivals[-1][1]["output"] == ["0", "1", "2"]
    assert end - first_output > 1.0, "output lines were held back until the end"


async def test_accept_header_selects_ndjson_for_sessions(http: httpx.AsyncClient) -> None:
    sid = (await http.post("/sessions")).json()["id"]
    try:
        response = await http.post(
            f"/sessions/{sid}/execute",
            json={"code": "print('a')"},
            headers={"accept": "application/x-ndjson"},
        )
        frames = [json.loads(line) for line in response.text.splitlines()]
        assert [f["type"] for f in frames if f["type"] != "status"] == ["output", "execution_result"]
    finally:
        await http.delete(f"/sessions/{sid}")


async def test_client_leaving_a_one_shot_stream_discards_its_kernel(http: httpx.AsyncClient, server: GatewayServer) -> None:
    code = WHOAMI + "\nimport time\ntime.sleep(60)"
    async with http.stream("POST", "/execute", json={"code": code, "stream": True}) as response:
        async for line in response.aiter_lines():
            frame = json.loads(line)
            if frame["type"] == "output":
                connection_file = frame["output"]["text"].strip()
                assert processes_of(connection_file)
                break
    await wait_gone(connection_file)


async def test_websocket_attaches_to_a_rest_session(http: httpx.AsyncClient, server: GatewayServer) -> None:
    sid = (await http.post("/sessions")).json()["id"]
    try:
        await http.post(f"/sessions/{sid}/execute", json={"code": "shared = 'from rest'"})
        async with connect(server, f"/ws?session_id={sid}") as client:
            assert client.session["session_id"] == sid
            assert (await http.get(f"/sessions/{sid}")).json()["connections"] == 1
            assert result_of(await client.run("print(shared)"))["output"] == ["from rest"]
        # the session outlives the socket
        after = (await http.post(f"/sessions/{sid}/execute", json={"code": "print(shared)"})).json()
        assert after["output"] == ["from rest"]
    finally:
        await http.delete(f"/sessions/{sid}")


async def test_attaching_to_an_unknown_session_is_refused(server: GatewayServer) -> None:
    async with websockets.connect(server.ws_url + "/ws?session_id=nope", open_timeout=30) as ws:
        frame = json.loads(await ws.recv())
        assert frame["type"] == "error" and "nope" in frame["message"]
        try:
            await ws.recv()
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd.code == 4404
        else:
            raise AssertionError("socket stayed open")
