"""The Jupyter kernels API: directly, and through a real jupyter_server using us as its gateway."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import psutil
import pytest
import websockets

from .conftest import ROOT, GatewayServer, free_port

JUPYTER_TOKEN = "jupyter-test-token"
GATEWAY_TOKEN = "gateway-test-token"


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayServer]:
    srv = GatewayServer(pool_size=1, token=GATEWAY_TOKEN, session_grace_s=0, kernel_env_allowlist=["GREETING"])
    yield srv
    assert not srv.stop()


def auth(token: str = GATEWAY_TOKEN) -> dict[str, str]:
    return {"authorization": f"token {token}"}  # as Jupyter sends it


def message(msg_type: str, content: dict[str, Any], channel: str = "shell") -> dict[str, Any]:
    return {
        "header": {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "session": "test", "username": "t",
                   "version": "5.3", "date": datetime.now().isoformat()},
        "parent_header": {}, "metadata": {}, "content": content, "channel": channel, "buffers": [],
    }


async def execute(ws: Any, code: str, timeout: float = 30) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Send an execute_request; return its iopub messages and its execute_reply."""
    msg = message("execute_request", {"code": code, "silent": False, "store_history": True,
                                      "user_expressions": {}, "allow_stdin": False})
    await ws.send(json.dumps(msg))
    iopub, reply, idle = [], None, False
    deadline = time.monotonic() + timeout
    while reply is None or not idle:
        frame = json.loads(await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic())))
        if frame.get("parent_header", {}).get("msg_id") != msg["header"]["msg_id"]:
            continue
        if frame["channel"] == "iopub":
            iopub.append(frame)
            idle = idle or (frame["msg_type"] == "status" and frame["content"]["execution_state"] == "idle")
        elif frame["msg_type"] == "execute_reply":
            reply = frame
    return iopub, reply


def stdout(iopub: list[dict[str, Any]]) -> str:
    return "".join(m["content"]["text"] for m in iopub if m["msg_type"] == "stream")


# -- directly ------------------------------------------------------------------------------


async def test_kernelspecs(gateway: GatewayServer) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=auth()) as http:
        assert "version" in (await http.get("/api")).json()
        specs = (await http.get("/api/kernelspecs")).json()
        assert specs["default"] == "python3" and {"python3", "bash"} <= set(specs["kernelspecs"])
        python = (await http.get("/api/kernelspecs/python3")).json()
        assert python["spec"]["language"] == "python" and python["name"] == "python3"
        logo = python["resources"]["logo-64x64"]
        assert (await http.get(logo)).headers["content-type"] == "image/png"
        assert (await http.get("/api/kernelspecs/cobol")).status_code == 404
        assert (await http.get("/kernelspecs/python3/..%2Fkernel.json")).status_code == 404
        assert (await http.get("/api/kernels", headers={"authorization": "token wrong"})).status_code == 401


async def test_kernel_lifecycle_and_both_protocol_directions(gateway: GatewayServer) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=auth(), timeout=60) as http:
        created = await http.post("/api/kernels", json={"name": "python3"})
        assert created.status_code == 201
        kernel = created.json()
        kid = kernel["id"]
        assert created.headers["location"] == f"/api/kernels/{kid}"
        assert set(kernel) == {"id", "name", "last_activity", "execution_state", "connections"}
        datetime.strptime(kernel["last_activity"], "%Y-%m-%dT%H:%M:%S.%fZ")
        assert kid in [k["id"] for k in (await http.get("/api/kernels")).json()]
        assert (await http.get("/health")).json()["sessions"] >= 1
        url = f"{gateway.ws_url}/api/kernels/{kid}/channels?session_id=abc"
        async with websockets.connect(url, additional_headers=auth()) as ws:
            iopub, reply = await execute(ws, "x = 6 * 7\nprint(x)")
            assert reply["content"]["status"] == "ok" and stdout(iopub) == "42\n"
            info = message("kernel_info_request", {})
            await ws.send(json.dumps(info))
            while (frame := json.loads(await asyncio.wait_for(ws.recv(), 10)))["msg_type"] != "kernel_info_reply":
                pass
            assert frame["channel"] == "shell" and frame["content"]["language_info"]["name"] == "python"
            assert (await http.get(f"/api/kernels/{kid}")).json()["connections"] == 1
            running = asyncio.create_task(execute(ws, "import time; time.sleep(30)"))
            await asyncio.sleep(1)
            assert (await http.post(f"/api/kernels/{kid}/interrupt")).status_code == 204
            _, reply = await asyncio.wait_for(running, 10)
            assert reply["content"]["ename"] == "KeyboardInterrupt"
            restarted = await http.post(f"/api/kernels/{kid}/restart")
            assert restarted.status_code == 200 and restarted.json()["id"] == kid
            # Clients are told, as Jupyter Server tells them of a kernel it restarted.
            while (frame := json.loads(await asyncio.wait_for(ws.recv(), 10)))["msg_type"] != "status" or \
                    frame["content"]["execution_state"] != "restarting":
                pass
            assert frame["channel"] == "iopub"
            iopub, reply = await execute(ws, "print('x' in dir())")
            assert stdout(iopub) == "False\n", "state survived the restart"
        assert (await http.delete(f"/api/kernels/{kid}")).status_code == 204
        assert (await http.get(f"/api/kernels/{kid}")).status_code == 404


async def test_a_flooding_kernel_and_a_slow_client_cannot_fill_the_gateway() -> None:
    server = GatewayServer(pool_size=1, session_grace_s=0, jupyter_queue_bytes=4 * 2**20)
    flood = (
        "k = get_ipython().kernel\nparent = k.get_parent()\ntext = 'x' * 1000\n"
        "for i in range(10**6):\n"
        "    k.session.send(k.iopub_socket, 'stream', {'name': 'stdout', 'text': text}, parent=parent)"
    )
    try:
        gateway = psutil.Process(server.proc.pid)
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            kid = (await http.post("/api/kernels", json={"name": "python3"})).json()["id"]
            url = f"{server.ws_url}/api/kernels/{kid}/channels"
            # A client that reads nothing while the flood runs: its socket fills, then ours.
            async with websockets.connect(url, max_queue=1, max_size=None) as ws:
                await execute(ws, "1")
                before = gateway.memory_info().rss
                await ws.send(json.dumps(message("execute_request", {"code": flood, "silent": False, "stop_on_error": False})))
                await asyncio.sleep(8)  # unbounded, the gateway grew by ~85 MB in this time
                grown = gateway.memory_info().rss - before
                assert grown < 48 * 2**20, f"gateway grew by {grown / 2**20:.0f} MB"
                assert (await http.post(f"/api/kernels/{kid}/interrupt")).status_code == 204
                # Messages were dropped, not the connection: it still works.
                iopub, reply = await execute(ws, "print('still here')", timeout=60)
                assert reply["content"]["status"] == "ok" and stdout(iopub) == "still here\n"
            assert (await http.delete(f"/api/kernels/{kid}")).status_code == 204
    finally:
        assert not server.stop()


async def test_many_sockets_that_read_nothing_cannot_fill_the_gateway() -> None:
    """Once, 20 such sockets on a kernel printing 40 MiB took the gateway from 134 to 471 MB."""
    server = GatewayServer(pool_size=1, session_grace_s=0, output_limit=10 * 2**20)
    flood = "import sys\nchunk = ('x' * 1023 + '\\n') * 1024\nfor i in range(40):\n    sys.stdout.write(chunk)\n    sys.stdout.flush()\nprint('done')"
    try:
        gateway = psutil.Process(server.proc.pid)
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http, contextlib.AsyncExitStack() as stack:
            kid = (await http.post("/api/kernels", json={"name": "python3"})).json()["id"]
            url = f"{server.ws_url}/api/kernels/{kid}/channels"
            reader = await stack.enter_async_context(websockets.connect(url, max_size=None))
            await execute(reader, "1")
            idle, refused = [], 0
            for _ in range(19):  # sockets that never read
                # (a close handshake with a socket that read nothing would wait out its time-out)
                ws = await stack.enter_async_context(websockets.connect(url, max_queue=1, max_size=None, close_timeout=0.2))
                try:
                    await asyncio.wait_for(ws.recv(), 0.3)
                    idle.append(ws)
                except asyncio.TimeoutError:
                    idle.append(ws)  # open, and silent: the kernel has nothing to say yet
                except websockets.ConnectionClosed as closed:
                    assert closed.rcvd.code == 1013 and "jupyter_sockets_per_kernel" in closed.rcvd.reason
                    refused += 1
            assert len(idle) == 7 and refused == 12, (len(idle), refused)
            before = gateway.memory_info().rss
            iopub, reply = await execute(reader, flood, timeout=120)
            grown = gateway.memory_info().rss - before
            assert reply["content"]["status"] == "ok"
            text = stdout(iopub)
            # The output limit holds for what passes through too, and says so.
            assert len(text) <= 10 * 2**20 and "output limit" in text, len(text)
            assert grown < 48 * 2**20, f"gateway grew by {grown / 2**20:.0f} MB"
            await http.delete(f"/api/kernels/{kid}")
    finally:
        assert not server.stop()


async def test_client_env_is_filtered_and_validated(gateway: GatewayServer) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=auth(), timeout=60) as http:
        env = {"KERNEL_FLAVOUR": "mint", "GREETING": "hi", "LD_PRELOAD": "/tmp/evil.so", "PATH": "/evil"}
        kid = (await http.post("/api/kernels", json={"name": "python3", "env": env})).json()["id"]
        try:
            async with websockets.connect(f"{gateway.ws_url}/api/kernels/{kid}/channels", additional_headers=auth()) as ws:
                code = "import os\nprint([os.environ.get(k) for k in ('KERNEL_FLAVOUR', 'GREETING', 'LD_PRELOAD')], '/evil' in os.environ['PATH'])"
                iopub, _ = await execute(ws, code)
                assert stdout(iopub) == "['mint', 'hi', None] False\n"
        finally:
            await http.delete(f"/api/kernels/{kid}")
        for bad in ({"KERNEL_X": "a\nb"}, {"KERNEL_X": "a\0b"}, {"KERNEL_X": "x" * 5000}):
            response = await http.post("/api/kernels", json={"name": "python3", "env": bad})
            assert response.status_code == 400, bad
        assert (await http.post("/api/kernels", json={"name": "cobol"})).status_code == 404


# -- through a real Jupyter server -----------------------------------------------------------


@pytest.fixture(scope="module")
def jupyter(gateway: GatewayServer) -> Iterator[str]:
    port = free_port()
    root = tempfile.mkdtemp()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(JUPYTER_RUNTIME_DIR=root, JUPYTER_DATA_DIR=root, JUPYTER_CONFIG_DIR=root)
    log = open(f"/tmp/jupyter-server-{port}.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "jupyter_server", f"--ServerApp.port={port}", "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False",
            f"--IdentityProvider.token={JUPYTER_TOKEN}", f"--gateway-url={gateway.url}",
            f"--GatewayClient.auth_token={GATEWAY_TOKEN}", "--allow-root",
        ],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, open(log.name).read()
        try:
            if httpx.get(f"{url}/api", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, open(log.name).read()
        time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(20)


async def test_a_real_jupyter_server_uses_the_gateway(jupyter: str, gateway: GatewayServer) -> None:
    headers = auth(JUPYTER_TOKEN)
    async with httpx.AsyncClient(base_url=jupyter, headers=headers, timeout=60) as http:
        specs = (await http.get("/api/kernelspecs")).json()
        assert {"python3", "bash"} <= set(specs["kernelspecs"])
        created = await http.post("/api/kernels", json={"name": "python3"})
        assert created.status_code == 201, created.text
        kid = created.json()["id"]
        # the kernel lives in the gateway, as a session of its
        async with httpx.AsyncClient(base_url=gateway.url, headers=auth()) as direct:
            assert kid in [k["id"] for k in (await direct.get("/api/kernels")).json()]
        ws_url = jupyter.replace("http", "ws") + f"/api/kernels/{kid}/channels?session_id={uuid.uuid4().hex}"
        async with websockets.connect(ws_url, additional_headers=headers) as ws:
            iopub, reply = await execute(ws, "y = 'through jupyter'\nprint(y)")
            assert reply["content"]["status"] == "ok" and stdout(iopub) == "through jupyter\n"
            running = asyncio.create_task(execute(ws, "import time; time.sleep(30)"))
            await asyncio.sleep(1)
            assert (await http.post(f"/api/kernels/{kid}/interrupt")).status_code == 204
            _, reply = await asyncio.wait_for(running, 15)
            assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
        assert (await http.post(f"/api/kernels/{kid}/restart")).status_code == 200
        async with websockets.connect(ws_url, additional_headers=headers) as ws:
            iopub, _ = await execute(ws, "print('y' in dir())")
            assert stdout(iopub) == "False\n"
        assert (await http.delete(f"/api/kernels/{kid}")).status_code == 204
        async with httpx.AsyncClient(base_url=gateway.url, headers=auth()) as direct:
            assert kid not in [k["id"] for k in (await direct.get("/api/kernels")).json()]


async def test_binary_protocols_carry_buffers(gateway: GatewayServer) -> None:
    # Jupyter's own codecs, to check ours against
    from jupyter_server.services.kernels.connection.base import (
        deserialize_binary_message,
        deserialize_msg_from_ws_v1,
        serialize_binary_message,
        serialize_msg_to_ws_v1,
    )

    # A comm round trip carries binary buffers both ways: the kernel echoes what it gets.
    setup = (
        "def target(comm, open_msg):\n"
        "    @comm.on_msg\n"
        "    def echo(msg):\n"
        "        comm.send({'got': len(msg['buffers'])}, buffers=[bytes(b)[::-1] for b in msg['buffers']])\n"
        "get_ipython().kernel.comm_manager.register_target('echo', target)\n"
    )
    async with httpx.AsyncClient(base_url=gateway.url, headers=auth(), timeout=60) as http:
        kid = (await http.post("/api/kernels", json={"name": "python3"})).json()["id"]
        try:
            url = f"{gateway.ws_url}/api/kernels/{kid}/channels"
            for v1 in (False, True):
                protocols = ["v1.kernel.websocket.jupyter.org"] if v1 else None
                async with websockets.connect(url, additional_headers=auth(), subprotocols=protocols) as ws:
                    assert ws.subprotocol == ("v1.kernel.websocket.jupyter.org" if v1 else None)

                    async def send(msg: dict[str, Any], buffers: list[bytes] = []) -> None:
                        channel = msg.pop("channel")
                        msg["buffers"] = buffers
                        if v1:
                            parts = [json.dumps(msg[k]).encode() for k in ("header", "parent_header", "metadata", "content")]
                            await ws.send(serialize_msg_to_ws_v1(parts + buffers, channel))
                        else:
                            msg["channel"] = channel
                            await ws.send(serialize_binary_message(msg) if buffers else json.dumps(msg))

                    async def recv() -> dict[str, Any]:
                        data = await asyncio.wait_for(ws.recv(), 30)
                        if v1:
                            channel, parts = deserialize_msg_from_ws_v1(data)
                            msg = {k: json.loads(p) for k, p in zip(("header", "parent_header", "metadata", "content"), parts[:4])}
                            msg.update(channel=channel, buffers=parts[4:], msg_type=msg["header"]["msg_type"])
                            return msg
                        return deserialize_binary_message(data) if isinstance(data, bytes) else json.loads(data)

                    setup_msg = message("execute_request", {"code": setup, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False})
                    await send(setup_msg)
                    while (m := await recv())["msg_type"] != "execute_reply":
                        pass
                    comm_id = uuid.uuid4().hex
                    await send(message("comm_open", {"comm_id": comm_id, "target_name": "echo", "data": {}}))
                    await send(message("comm_msg", {"comm_id": comm_id, "data": {}}), [b"abc", b"\x00\x01\x02"])
                    while (m := await recv())["msg_type"] != "comm_msg":
                        pass
                    assert m["channel"] == "iopub" and m["content"]["data"] == {"got": 2}
                    assert [bytes(b) for b in m["buffers"]] == [b"cba", b"\x02\x01\x00"]
        finally:
            await http.delete(f"/api/kernels/{kid}")


# -- leniency, as Jupyter Server and Kernel Gateway have it ----------------------------------


async def test_a_json_body_without_content_type_starts_a_kernel(gateway: GatewayServer) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=auth(), timeout=60) as http:
        for headers in ({}, {"content-type": "application/x-www-form-urlencoded"}, {"content-type": "text/plain"}):
            # httpx's content= sends the bytes as they are, with only the header given here
            created = await http.post("/api/kernels", content=json.dumps({"name": "bash"}).encode(), headers=headers)
            assert created.status_code == 201, (headers, created.text)
            assert created.json()["name"] == "bash"
            assert (await http.delete(f"/api/kernels/{created.json()['id']}")).status_code == 204
        # The id of one of the caller's kernels gives that kernel back, as in Jupyter Server.
        kid = (await http.post("/api/kernels", json={"name": "python3"})).json()["id"]
        again = await http.post("/api/kernels", json={"name": "python3", "kernel_id": kid})
        assert again.status_code == 201 and again.json()["id"] == kid
        assert (await http.delete(f"/api/kernels/{kid}")).status_code == 204
        # Errors carry the fields jupyter_server's gateway client shows its user.
        missing = (await http.post("/api/kernels", json={"name": "cobol"})).json()
        assert "cobol" in missing["message"] and missing["reason"] == "Not Found"


async def test_messages_without_a_channel_are_shell_messages(gateway: GatewayServer) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=auth(), timeout=60) as http:
        kid = (await http.post("/api/kernels", json={"name": "python3"})).json()["id"]
        try:
            async with websockets.connect(f"{gateway.ws_url}/api/kernels/{kid}/channels", additional_headers=auth()) as ws:
                await ws.send("[" * 100_000 + "]" * 100_000)  # dropped, and the socket stays
                info = message("kernel_info_request", {})
                del info["channel"]
                await ws.send(json.dumps(info))
                while (frame := json.loads(await asyncio.wait_for(ws.recv(), 10)))["msg_type"] != "kernel_info_reply":
                    pass
                assert frame["channel"] == "shell" and frame["parent_header"]["msg_id"] == info["header"]["msg_id"]
        finally:
            await http.delete(f"/api/kernels/{kid}")


async def test_the_sessions_api(gateway: GatewayServer) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=auth(), timeout=60) as http:
        assert (await http.post("/api/sessions", json={"type": "notebook"})).status_code == 400
        created = await http.post("/api/sessions", json={"path": "a.ipynb", "type": "notebook", "kernel": {"name": "python3"}})
        assert created.status_code == 201, created.text
        session = created.json()
        assert session["path"] == "a.ipynb" and session["kernel"]["name"] == "python3"
        assert session["notebook"] == {"path": "a.ipynb", "name": None}
        assert created.headers["location"] == f"/api/sessions/{session['id']}"
        # The same path gives the same session; the old `notebook` form is read too.
        same = (await http.post("/api/sessions", json={"notebook": {"path": "a.ipynb"}})).json()
        assert same["id"] == session["id"]
        assert [s["id"] for s in (await http.get("/api/sessions")).json()] == [session["id"]]
        # Another client sees none of it.
        async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as anonymous:
            assert (await anonymous.get("/api/sessions")).status_code == 401
        # Renamed, then moved to a new kernel of another kernelspec: the old kernel goes.
        old_kernel = session["kernel"]["id"]
        patched = (await http.patch(f"/api/sessions/{session['id']}", json={"path": "b.ipynb", "kernel": {"name": "bash"}})).json()
        assert patched["path"] == "b.ipynb" and patched["kernel"]["name"] == "bash"
        assert (await http.get(f"/api/kernels/{old_kernel}")).status_code == 404
        bad = await http.patch(f"/api/sessions/{session['id']}", json={"kernel": {"id": str(uuid.uuid4())}})
        assert bad.status_code == 400
        # Deleting the session shuts its kernel down.
        assert (await http.delete(f"/api/sessions/{session['id']}")).status_code == 204
        assert (await http.get(f"/api/kernels/{patched['kernel']['id']}")).status_code == 404
        assert (await http.get(f"/api/sessions/{session['id']}")).status_code == 404
        # A session whose kernel was deleted goes with it.
        gone = (await http.post("/api/sessions", json={"path": "c.ipynb", "type": "console"})).json()
        await http.delete(f"/api/kernels/{gone['kernel']['id']}")
        assert (await http.get(f"/api/sessions/{gone['id']}")).status_code == 404


# -- Jupyter's own tools, through jupyter_server's GatewayKernelManager ----------------------


def tool_notebook(path: Any, error: bool = True) -> None:
    """State across cells, an error (for nbconvert's --allow-errors), HTML and a plot; the
    first cell is papermill's parameters cell."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    parameters = new_code_cell("x = 40")
    parameters.metadata["tags"] = ["parameters"]
    cells = [
        parameters,
        new_code_cell("print(x + 1)"),
        *([new_code_cell("1 / 0")] if error else []),
        new_code_cell("from IPython.display import HTML\nHTML('<b>bold</b>')"),
        new_code_cell("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()"),
    ]
    spec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(new_notebook(cells=cells, metadata={"kernelspec": spec}), str(path))


def outputs_of(path: Any) -> list[list[tuple[str, Any]]]:
    import nbformat

    cells = [c for c in nbformat.read(str(path), 4).cells if c.cell_type == "code"]
    return [[(o.output_type, o.get("text") or o.get("ename") or sorted(o.get("data", {}))) for o in c.outputs] for c in cells]


PLOT_AND_HTML = [[("execute_result", ["text/html", "text/plain"])], [("display_data", ["image/png", "text/plain"])]]


def tool_env(gateway: GatewayServer, home: Any) -> dict[str, str]:
    """What a user sets to run a tool through a gateway. No token: jupyter_server's
    GatewayKernelClient opens the channels socket without any (its HTTP calls send it),
    so against a gateway with a token these tools fail, with Kernel Gateway too."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "JUPYTER_"))}
    env.update(
        JUPYTER_GATEWAY_URL=gateway.url,
        JUPYTER_CONFIG_DIR=str(home), JUPYTER_DATA_DIR=str(home), JUPYTER_RUNTIME_DIR=str(home),
    )
    return env


GATEWAY_MANAGER = "jupyter_server.gateway.managers.GatewayKernelManager"


def test_nbconvert_executes_a_notebook_through_the_gateway(server: GatewayServer, tmp_path: Any) -> None:
    tool_notebook(tmp_path / "in.ipynb")
    jupyter = os.path.join(os.path.dirname(sys.executable), "jupyter")
    done = subprocess.run(
        [jupyter, "nbconvert", "--to", "notebook", "--execute", "--allow-errors", "--output", "out.ipynb",
         f"--ExecutePreprocessor.kernel_manager_class={GATEWAY_MANAGER}", "in.ipynb"],
        cwd=tmp_path, env=tool_env(server, tmp_path), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert outputs_of(tmp_path / "out.ipynb") == [[], [("stream", "41\n")], [("error", "ZeroDivisionError")], *PLOT_AND_HTML]


def papermill(server: GatewayServer, cwd: Any) -> subprocess.CompletedProcess[str]:
    # papermill's command line has no flag for the kernel manager: its API does.
    script = (
        "import papermill\n"
        f"papermill.execute_notebook('in.ipynb', 'out.ipynb', parameters={{'x': 41}}, kernel_manager_class={GATEWAY_MANAGER!r}, progress_bar=False)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, env=tool_env(server, cwd), capture_output=True, text=True, timeout=120,
    )


def test_papermill_executes_a_notebook_through_the_gateway(server: GatewayServer, tmp_path: Any) -> None:
    tool_notebook(tmp_path / "in.ipynb", error=False)
    done = papermill(server, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    # papermill adds a cell with the parameters given, after the parameters cell
    assert outputs_of(tmp_path / "out.ipynb") == [[], [], [("stream", "42\n")], *PLOT_AND_HTML]
    # papermill has no allow-errors: a cell's error fails the run, saying which.
    tool_notebook(tmp_path / "in.ipynb", error=True)
    failed = papermill(server, tmp_path)
    assert failed.returncode != 0 and "ZeroDivisionError" in failed.stderr


async def test_a_message_that_is_not_unicode_is_dropped_and_the_connection_works_on(gateway: GatewayServer) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=auth(), timeout=60) as http:
        kid = (await http.post("/api/kernels", json={"name": "python3"})).json()["id"]
        try:
            url = f"{gateway.ws_url}/api/kernels/{kid}/channels"
            async with websockets.connect(url, additional_headers=auth()) as ws:
                await execute(ws, "kept = 1")
                lone = message("execute_request", {"code": "x = '\ud800'", "silent": False})
                await ws.send(json.dumps(lone))  # escaped: valid JSON, but not Unicode text
                iopub, reply = await execute(ws, "print(kept)")
                assert reply["content"]["status"] == "ok" and stdout(iopub) == "1\n"
            assert "lone surrogate" in gateway.log()
        finally:
            await http.delete(f"/api/kernels/{kid}")
