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
        # The bare socket's unused Python kernel was given back for the Bash one...
        async with httpx.AsyncClient(base_url=server.url) as http:
            listed = (await http.get(f"/sessions/{client.session['session_id']}")).json()
        assert listed["language"] == "bash" and [k["language"] for k in listed["kernels"]] == ["bash"]
        # ...and Python still runs on the same socket, on a kernel of its own.
        assert result_of(await client.run("print(1)", "p", language="python"))["output"] == ["1"]


async def test_one_socket_several_languages_each_with_its_own_state(server: GatewayServer) -> None:
    async with connect(server) as client:
        in_use = server.health()["kernels"]["in_use"]
        assert result_of(await client.run("x = 41", "1", language="python"))["status"] == "ok"
        assert result_of(await client.run("echo hi", "2", language="bash"))["output"] == ["hi"]
        assert result_of(await client.run("print(x + 1)", "3", language="python"))["output"] == ["42"]
        assert result_of(await client.run("cd /tmp", "4", language="bash"))["status"] == "ok"
        assert result_of(await client.run("pwd", "5", language="bash"))["output"] == ["/tmp"]
        assert server.health()["kernels"]["in_use"] == in_use + 1, "capacity counts each kernel"
        async with httpx.AsyncClient(base_url=server.url) as http:
            listed = (await http.get(f"/sessions/{client.session['session_id']}")).json()
        assert [(k["language"], k["kernel"]) for k in listed["kernels"]] == [("python", "python3"), ("bash", "bash")]
        assert listed["kernels"][0]["language_version"].startswith("3.")

        # Restarting one language loses its state only, and says which.
        await client.send({"type": "restart", "language": "bash"})
        notices = await client.until(lambda f: f["type"] == "status" and f.get("state_lost") and f["execution_state"] == "idle")
        assert notices[-1]["language"] == "bash" and "bash kernel" in notices[-1]["message"]
        assert result_of(await client.run("pwd", "6", language="bash"))["output"] == ["/home/kernel"]
        assert result_of(await client.run("print(x)", "7", language="python"))["output"] == ["41"]


async def test_order_across_languages_is_the_order_sent(server: GatewayServer) -> None:
    async with connect(server) as client:
        sent = [("python", "import time; time.sleep(0.3); print('p1')"), ("bash", "echo b1"), ("python", "print('p2')"), ("bash", "echo b2")]
        for i, (language, code) in enumerate(sent):
            await client.send({"type": "execute_code", "code": code, "language": language, "id": str(i)})
        frames = await client.until(lambda f: f["type"] == "execution_result" and f["id"] == "3")
        results = [f for f in frames if f["type"] == "execution_result"]
        assert [r["id"] for r in results] == ["0", "1", "2", "3"]
        assert [r["output"] for r in results] == [["p1"], ["b1"], ["p2"], ["b2"]]


async def test_restart_of_a_language_the_session_never_used_is_refused(server: GatewayServer) -> None:
    async with connect(server, "/ws?language=python") as client:
        await client.send({"type": "restart", "language": "bash", "id": "r"})
        frame = await client.until(lambda f: f["type"] == "error")
        assert frame[-1]["id"] == "r" and "no bash kernel" in frame[-1]["message"]


async def test_bash_failure_is_an_error(http: httpx.AsyncClient) -> None:
    result = (await http.post("/execute", json={"code": "false", "language": "bash"})).json()
    assert result["status"] == "error"


async def test_unknown_language_names_the_available_ones(http: httpx.AsyncClient, server: GatewayServer) -> None:
    detail = (await http.post("/execute", json={"code": "1", "language": "cobol"})).json()["detail"]
    assert "cobol" in detail and "bash" in detail and "python" in detail
    async with connect(server) as client:
        await client.send({"type": "execute_code", "code": "1", "language": "cobol", "id": "x"})
        frames = await client.until(lambda f: f["type"] == "execution_result")
        error = next(f for f in frames if f["type"] == "error")
        assert error["id"] == "x" and "bash" in error["message"]
        assert frames[-1]["id"] == "x" and frames[-1]["status"] == "error" and "cobol" in frames[-1]["errors"][0]


async def test_bash_code_with_control_keys_is_refused_at_once_and_the_session_goes_on(http: httpx.AsyncClient) -> None:
    """bash_kernel types code into an interactive bash: a raw Ctrl-V quoted the newline and
    the run hung until its time-out (found by schemathesis). Python keeps every character."""
    sid = (await http.post("/sessions", json={"language": "bash"})).json()["id"]
    try:
        for code in ("echo a\x16", "\x12", "echo \x1b[A"):
            refused = await http.post(f"/sessions/{sid}/execute", json={"code": code}, timeout=10)
            assert refused.status_code == 400 and "control characters" in refused.json()["detail"], refused.text
        one_shot = await http.post("/execute", json={"code": "\x16", "language": "bash"}, timeout=10)
        assert one_shot.status_code == 400
        ok = (await http.post(f"/sessions/{sid}/execute", json={"code": "printf 'a\\tb\\n'"})).json()
        assert ok["status"] == "ok" and ok["output"] == ["a\tb"]
        python = (await http.post("/execute", json={"code": "print(repr('\x16'))"})).json()
        assert python["output"] == ["'\\x16'"]
    finally:
        await http.delete(f"/sessions/{sid}")
