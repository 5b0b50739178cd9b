"""Languages: Python and Bash, chosen by `language`, both confined the same way."""

from __future__ import annotations

import httpx

from .conftest import GatewayServer, connect, result_of


async def test_languages_lists_python_and_bash(http: httpx.AsyncClient) -> None:
    listed = {entry["language"]: entry for entry in (await http.get("/languages")).json()}
    assert listed["python"]["kernel"] == "python3" and listed["python"]["default"] is True
    assert listed["bash"]["kernel"] == "bash"


async def test_bash_one_shot(http: httpx.AsyncClient) -> None:
    code = "x=41\necho $((x + 1))\ncd /root 2>/dev/null && ls || echo no-root-view"
    result = (await http.post("/execute", json={"code": code, "language": "bash"})).json()
    assert result["status"] == "ok"
    assert result["output"][0] == "42"


async def test_bash_over_the_websocket_keeps_state(server: GatewayServer) -> None:
    async with connect(server, "/ws?language=bash") as client:
        assert client.session["language"] == "bash"
        await client.run("GREETING=hello", "a")
        assert result_of(await client.run("echo $GREETING world", "b"))["output"] == ["hello world"]


async def test_icotes_terminal_client_sends_bash_on_a_bare_socket(server: GatewayServer) -> None:
    async with connect(server) as client:
        result = result_of(await client.run("echo from bash", language="bash"))
        assert result["output"] == ["from bash"]
        await client.send({"type": "execute_code", "code": "print(1)", "language": "python", "id": "p"})
        frame = await client.recv()
        assert frame["type"] == "error" and frame["id"] == "p" and "runs bash" in frame["message"]


async def test_bash_failure_is_an_error(http: httpx.AsyncClient) -> None:
    result = (await http.post("/execute", json={"code": "false", "language": "bash"})).json()
    assert result["status"] == "error"


async def test_unknown_language_names_the_available_ones(http: httpx.AsyncClient, server: GatewayServer) -> None:
    detail = (await http.post("/execute", json={"code": "1", "language": "cobol"})).json()["detail"]
    assert "cobol" in detail and "bash" in detail and "python" in detail
    async with connect(server) as client:
        await client.send({"type": "execute_code", "code": "1", "language": "cobol", "id": "x"})
        frame = await client.recv()
        assert frame["type"] == "error" and "bash" in frame["message"]
