"""Tokens, owners, origins and sizes: nobody without the token runs code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
import websockets

from .conftest import ROOT, GatewayServer, connect, free_port, result_of

TOKEN = "the-right-token"
ALICE, BOB = "alice-token-0123456789", "bob-token-9876543210"


@pytest.fixture(scope="module")
def guarded() -> Iterator[GatewayServer]:
    srv = GatewayServer(
        pool_size=1, token=TOKEN, tokens={"alice": ALICE, "bob": BOB}, session_grace_s=0,
        max_body_bytes=100_000, max_message_bytes=100_000, max_code_bytes=50_000,
    )
    yield srv
    assert not srv.stop()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_every_endpoint_but_health_needs_the_token(guarded: GatewayServer) -> None:
    async with httpx.AsyncClient(base_url=guarded.url, timeout=30) as http:
        schema = (await http.get("/openapi.json", headers=bearer(TOKEN))).json()
        calls = [("GET", "/openapi.json"), ("GET", "/docs")]
        for path, methods in schema["paths"].items():
            for method in methods:
                calls.append((method.upper(), path.replace("{session_id}", "some-id")))
        assert len(calls) > 10
        for method, path in calls:
            for headers in ({}, bearer("wrong"), {"authorization": "token wrong"}):
                response = await http.request(method, path, headers=headers, json={"code": "1"})
                if path == "/health":
                    assert response.status_code == 200
                else:
                    assert response.status_code == 401, (method, path, headers, response.status_code)
                    assert "token" in response.json()["detail"]
        for headers, params in ((bearer(TOKEN), {}), ({"authorization": f"token {TOKEN}"}, {}), ({}, {"token": TOKEN})):
            response = await http.post("/execute", json={"code": "print(2)"}, headers=headers, params=params)
            assert response.json()["output"] == ["2"]
        health = (await http.get("/health")).json()
        assert health["sessions"] == 0


async def test_websocket_refused_without_the_token_before_any_kernel(guarded: GatewayServer) -> None:
    before = guarded.health()["kernels"]
    for suffix, headers in (("", {}), ("?token=wrong", {}), ("", bearer("wrong"))):
        async with websockets.connect(guarded.ws_url + "/ws" + suffix, additional_headers=headers, open_timeout=30) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd.code == 4401
    after = guarded.health()
    assert after["sessions"] == 0 and after["kernels"]["in_use"] == before["in_use"]
    async with connect(guarded, f"/ws?token={TOKEN}") as client:
        assert result_of(await client.run("print('in')"))["output"] == ["in"]
    assert TOKEN not in guarded.log() and "token=[redacted]" in guarded.log(), "the access log keeps the token"
    async with connect(guarded, additional_headers=bearer(TOKEN)) as client:
        assert result_of(await client.run("print('in')"))["output"] == ["in"]


async def test_one_client_cannot_use_anothers_session(guarded: GatewayServer) -> None:
    async with httpx.AsyncClient(base_url=guarded.url, timeout=30) as http:
        sid = (await http.post("/sessions", headers=bearer(ALICE))).json()["id"]
        try:
            assert len(sid) >= 22
            for method, path in [("GET", f"/sessions/{sid}"), ("POST", f"/sessions/{sid}/execute"),
                                 ("POST", f"/sessions/{sid}/interrupt"), ("DELETE", f"/sessions/{sid}")]:
                response = await http.request(method, path, headers=bearer(BOB), json={"code": "1"})
                assert response.status_code == 404, (method, path)
            response = await http.post("/execute", headers=bearer(BOB), json={"code": "1", "session_id": sid})
            assert response.status_code == 404
            assert sid not in [s["id"] for s in (await http.get("/sessions", headers=bearer(BOB))).json()]
            assert sid in [s["id"] for s in (await http.get("/sessions", headers=bearer(ALICE))).json()]
            async with websockets.connect(f"{guarded.ws_url}/ws?session_id={sid}", additional_headers=bearer(BOB)) as ws:
                assert json.loads(await ws.recv())["type"] == "error"
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await ws.recv()
                assert closed.value.rcvd.code == 4404
        finally:
            assert (await http.delete(f"/sessions/{sid}", headers=bearer(ALICE))).status_code == 204


async def test_a_rebinding_page_runs_nothing_without_a_token(server: GatewayServer) -> None:
    """A page at evil.example that points its name at 127.0.0.1: Host and Origin are both
    its own. The shared test server has no token, like a developer's gateway."""
    evil = f"evil.example:{server.port}"
    before = server.health()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        rebound = await http.post("/execute", json={"code": "print(1)"}, headers={"host": evil, "origin": f"http://{evil}"})
        assert rebound.status_code == 403 and "GATEWAY_ALLOWED_HOSTS" in rebound.json()["detail"]
        assert (await http.get("/sessions", headers={"host": evil})).status_code == 403  # reading, too
        # A page elsewhere posting across sites to the real address: its Origin is not allowed.
        cross = await http.post("/sessions", json={}, headers={"origin": "http://evil.example"})
        assert cross.status_code == 403 and "GATEWAY_CORS_ORIGINS" in cross.json()["detail"]
        # A page the gateway served itself, and clients that are not browsers, go on.
        own = await http.post("/execute", json={"code": "print(2)"}, headers={"origin": server.url})
        assert own.json()["output"] == ["2"]
        assert (await http.post("/execute", json={"code": "print(3)"}, headers={"host": f"localhost:{server.port}"})).json()["output"] == ["3"]
    for origin in (f"http://{evil}", None):
        async with websockets.connect(f"ws://{evil}/ws", host="127.0.0.1", port=server.port, origin=origin, open_timeout=30) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd.code == 4403
    after = server.health()
    assert after["sessions"] == before["sessions"] and after["kernels"]["in_use"] == before["kernels"]["in_use"]


def test_configured_host_names_are_served() -> None:
    srv = GatewayServer(pool_size=0, allowed_hosts=["gw.example"])
    try:
        assert httpx.get(f"{srv.url}/health", headers={"host": "gw.example"}).status_code == 200
        assert httpx.get(f"{srv.url}/health", headers={"host": "other.example"}).status_code == 403
    finally:
        assert not srv.stop()


async def test_foreign_origin_is_refused(guarded: GatewayServer) -> None:
    url = f"{guarded.ws_url}/ws?token={TOKEN}"
    async with websockets.connect(url, origin="http://evil.example", open_timeout=30) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd.code == 4403
    async with connect(guarded, f"/ws?token={TOKEN}", origin="http://localhost:5173") as client:
        assert client.session["type"] == "session"


async def test_oversize_input_is_refused(guarded: GatewayServer) -> None:
    async with httpx.AsyncClient(base_url=guarded.url, timeout=30, headers=bearer(TOKEN)) as http:
        big = await http.post("/execute", json={"code": "#" * 200_000})
        assert big.status_code == 413 and "max_body_bytes" in big.json()["detail"]

        async def chunks():
            for _ in range(20):
                yield b"#" * 10_000

        chunked = await http.post("/execute", content=chunks(), headers={"content-type": "application/json"})
        assert chunked.status_code == 413
        code = await http.post("/execute", json={"code": "#" * 60_000})
        assert code.status_code == 413 and "max_code_bytes" in code.json()["detail"]
        assert (await http.post("/execute", json={"code": "print(3)"})).json()["output"] == ["3"]
    async with connect(guarded, f"/ws?token={TOKEN}") as client:
        for id, size, limit in (("big", 150_000, "max_message_bytes"), ("code", 60_000, "max_code_bytes")):
            await client.send({"type": "execute_code", "code": "#" * size, "id": id})
            error, result = await client.until(lambda f: f["type"] == "execution_result")
            assert error["type"] == "error" and limit in error["message"] and error["id"] == id
            assert result["status"] == "error" and result["id"] == id and limit in result["reason"]
        assert result_of(await client.run("print('ok')"))["output"] == ["ok"]
        # Far past the limit: the socket is cut (1009), maybe while the send is still going.
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await client.send("x" * 1_000_000)
            await client.recv()
        assert closed.value.rcvd.code == 1009


def test_serving_beyond_loopback_without_a_token_makes_one() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(GATEWAY_POOL_SIZE="0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "--host", "0.0.0.0", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        lines = []
        deadline = time.monotonic() + 30
        while not any("?token=" in line for line in lines):
            assert time.monotonic() < deadline, "".join(lines)
            lines.append(proc.stdout.readline())
        token = next(line for line in lines if "?token=" in line).split("?token=")[1].strip()
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 401
        assert httpx.get(f"http://127.0.0.1:{port}/", headers=bearer(token)).status_code == 200
    finally:
        proc.terminate()
        proc.wait(20)
