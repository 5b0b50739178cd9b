"""`GATEWAY_LOG_FORMAT=json`: every line the server writes is a JSON object; lines about a
session carry its id, lines logged while a request is served carry the request's id (the
client's `X-Request-ID`, echoed), and neither the user's code nor its output is in them."""

from __future__ import annotations

import json

import httpx

from .conftest import GatewayServer, connect, result_of


async def test_json_lines_carry_their_ids_and_no_user_code() -> None:
    srv = GatewayServer(pool_size=1, session_grace_s=0, log_format="json", kernel_uid_base=75500)
    try:
        async with httpx.AsyncClient(base_url=srv.url, timeout=60) as http:
            created = await http.post("/sessions", headers={"X-Request-ID": "req-42"})
            assert created.headers["x-request-id"] == "req-42"
            session_id = created.json()["id"]
            code = "secret = 'CODE-MARKER-1'\nprint('OUTPUT-' + 'MARKER-2')\n1/0"
            await http.post(f"/sessions/{session_id}/execute", json={"code": code})
            await http.delete(f"/sessions/{session_id}")
            made_up = await http.get("/health", headers={"X-Request-ID": "not a token!"})
            assert made_up.headers["x-request-id"] != "not a token!" and len(made_up.headers["x-request-id"]) == 16
        async with connect(srv) as ws:
            socket_session = ws.session["session_id"]
            assert result_of(await ws.run("print(2)"))["status"] == "ok"
            await ws.send({"type": "close_session"})
    finally:
        assert not srv.stop()
    lines = [json.loads(line) for line in srv.log().splitlines() if line.strip()]  # each one JSON
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    created_line = next(line for line in lines if line["message"].startswith(f"session {session_id}: created"))
    assert created_line["session_id"] == session_id and created_line["request_id"] == "req-42"
    ran = [line for line in lines if line.get("session_id") == session_id and "execution" in line["message"]]
    assert ran and ran[0]["request_id"]
    assert any(line.get("session_id") == socket_session and "socket" in line["message"] for line in lines)
    access = [line for line in lines if line["logger"] == "uvicorn.access" and "/sessions" in line["message"]]
    assert access and access[0]["request_id"] == "req-42"
    text = srv.log()
    assert "CODE-MARKER-1" not in text and "MARKER-2" not in text and "ZeroDivisionError" not in text
