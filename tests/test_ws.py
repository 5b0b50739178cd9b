"""The /ws protocol: one persistent kernel per socket, through the real server."""

from __future__ import annotations

import asyncio
import json
import time

import websockets

from .conftest import WHOAMI, GatewayServer, connect, processes_of, result_of, wait_gone


async def test_session_frame_comes_first(server: GatewayServer) -> None:
    async with connect(server) as client:
        frame = client.session
        assert len(frame["session_id"]) >= 22  # 128 random bits
        assert frame["language"] == "python" and frame["kernel"] == "python3"
        assert frame["resumed"] is False


async def test_state_is_kept_on_one_socket(server: GatewayServer) -> None:
    async with connect(server) as client:
        assert result_of(await client.run("x = 41", "a"))["status"] == "ok"
        assert result_of(await client.run("print(x + 1)", "b"))["output"] == ["42"]


async def test_state_is_not_shared_between_sockets(server: GatewayServer) -> None:
    async with connect(server) as one, connect(server) as two:
        await one.run("only_here = 1")
        result = result_of(await two.run("print(only_here)"))
        assert result["status"] == "error"
        assert result["errors"] == ["NameError: name 'only_here' is not defined"]


async def test_output_arrives_before_the_result(server: GatewayServer) -> None:
    async with connect(server) as client:
        await client.send({"type": "execute_code", "code": "import time\nprint('first', flush=True)\ntime.sleep(1.5)\nprint('second')", "id": "s"})
        arrivals = []
        while True:
            frame = await client.recv()
            arrivals.append((time.monotonic(), frame))
            if frame["type"] == "execution_result":
                break
        outputs = [(t, f) for t, f in arrivals if f["type"] == "output"]
        assert outputs[0][1]["output"]["text"] == "first\n"
        assert arrivals[-1][0] - outputs[0][0] > 1.0, "first output was held back until the end"
        assert result_of([f for _, f in arrivals])["output"] == ["first", "second"]


async def test_ids_are_echoed_under_the_clients_names(server: GatewayServer) -> None:
    async with connect(server) as client:
        await client.send({"type": "execute", "code": "print(1)", "execution_id": "e-7"})
        frames = await client.until(lambda f: f["type"] == "execution_result")
        for frame in frames:
            assert frame["id"] == "e-7" and frame["execution_id"] == "e-7", frame


async def test_display_and_error_frames(server: GatewayServer) -> None:
    async with connect(server) as client:
        frames = await client.run("from IPython.display import HTML, display\ndisplay(HTML('<i>x</i>'))\n1/0")
        kinds = [f["output"]["output_type"] for f in frames if f["type"] == "output"]
        assert kinds == ["display_data", "error"]
        result = result_of(frames)
        assert result["status"] == "error" and result["errors"] == ["ZeroDivisionError: division by zero"]
        assert any("ZeroDivisionError" in line for line in result["outputs"][-1]["traceback"])


async def test_queued_requests_run_in_order_without_interleaving(server: GatewayServer) -> None:
    async with connect(server) as client:
        for i in range(3):
            code = f"import time\nfor j in range(3):\n    print({i}, j, flush=True)\n    time.sleep(0.05)"
            await client.send({"type": "execute_code", "code": code, "id": f"q{i}"})
        frames = []
        while len([f for f in frames if f["type"] == "execution_result"]) < 3:
            frames.append(await client.recv())
        order = [f["id"] for f in frames if "id" in f]
        # every frame of q0, then every frame of q1, then of q2
        assert order == sorted(order), order
        results = [f for f in frames if f["type"] == "execution_result"]
        assert [r["output"] for r in results] == [[f"{i} {j}" for j in range(3)] for i in range(3)]
        assert [r["execution_count"] for r in results] == [1, 2, 3]


async def test_bad_messages_get_error_frames_and_the_socket_stays(server: GatewayServer) -> None:
    async with connect(server) as client:
        await client.send("{not json")
        assert "malformed JSON" in (await client.recv())["message"]
        await client.send("[1, 2]")
        assert (await client.recv())["type"] == "error"
        await client.send({"type": "dance", "id": "d"})
        frame = await client.recv()
        assert frame["type"] == "error" and frame["id"] == "d" and "execute_code" in frame["message"]
        await client.send({"type": "execute_code", "id": "m"})
        frames = await client.until(lambda f: f["type"] == "execution_result")
        assert [(f["type"], f["id"]) for f in frames] == [("error", "m"), ("execution_result", "m")]
        assert "code" in frames[0]["message"] and frames[1]["status"] == "error"
        await client.send({"type": "execute_code", "code": "1", "language": "cobol", "id": "l"})
        frame = (await client.until(lambda f: f["type"] == "execution_result"))[0]
        assert frame["type"] == "error" and "cobol" in frame["message"] and "python" in frame["message"]
        await client.send("[" * 100_000 + "]" * 100_000)  # once, a RecursionError dropped the socket
        assert "nested too deeply" in (await client.recv())["message"]
        await client.ws.send(b"\x00\x01")
        assert "binary" in (await client.recv())["message"]
        await client.send({"type": "ping"})
        assert (await client.recv())["type"] == "pong"
        assert result_of(await client.run("print('fine')"))["output"] == ["fine"]


async def test_original_icotes_client_works_unmodified(server: GatewayServer) -> None:
    async with websockets.connect(server.ws_url + "/ws", open_timeout=60) as ws:
        await ws.send(json.dumps({"type": "ping"}))
        await ws.send(json.dumps({"type": "execute_code", "code": "print('hi')\nimport sys; print('oops', file=sys.stderr)", "language": "python"}))
        seen = []
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
            seen.append(frame["type"])
            if frame["type"] == "execution_result":
                break
        assert "pong" in seen and seen[0] == "session"
        assert frame["output"] == ["hi"] and frame["errors"] == ["oops"]
        assert isinstance(frame["execution_time"], float)


async def test_kernel_killed_mid_run_then_session_goes_on(server: GatewayServer) -> None:
    async with connect(server) as client:
        await client.run("x = 1")
        frames = await client.run("import os\nos.kill(os.getpid(), 9)", "k")
        result = result_of(frames)
        assert result["status"] == "died"
        assert any("SIGKILL" in line for line in result["errors"])
        notice = await client.until(lambda f: f["type"] == "status" and f.get("state_lost") and f["execution_state"] == "idle")
        assert "state was lost" in notice[-1]["message"]
        after = result_of(await client.run("print('x' in dir())", "n"))
        assert after["output"] == ["False"]


async def test_closing_the_socket_shuts_its_kernel_down(server: GatewayServer) -> None:
    async with connect(server) as client:
        connection_file = result_of(await client.run(WHOAMI))["output"][0]
        assert processes_of(connection_file)
    await wait_gone(connection_file)


async def test_health_counts_open_sockets(server: GatewayServer) -> None:
    before = server.health()["connections"]
    async with connect(server):
        assert server.health()["connections"] == before + 1
        assert server.health()["sessions"] >= 1
    deadline = time.monotonic() + 10
    while server.health()["connections"] != before:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def test_output_that_is_not_utf8_arrives_as_jupyter_client_shows_it(server: GatewayServer) -> None:
    """`print('\\udcff')` makes ipykernel send a byte that is not UTF-8; the message, and what
    was printed with it, still arrives (U+FFFD in its place, as in JupyterLab)."""
    async with connect(server) as client:
        frames = await client.run("print('a\\udcffb')\nprint('next')", "u")
        assert result_of(frames)["output"] == ["a\ufffdb", "next"], frames


async def test_output_with_a_lone_surrogate_arrives_escaped(server: GatewayServer) -> None:
    """A kernel's message may escape a lone surrogate, which UTF-8 cannot carry: its frames
    still go out, as JSON that escapes it again, and the run ends as usual."""
    send = (
        "k = get_ipython().kernel\n"
        "k.session.send(k.iopub_socket, 'stream', content=b'{\"name\": \"stdout\", \"text\": \"a\\\\ud800b\\\\n\"}',"
        " parent=k.get_parent(), ident=b'stream.stdout')\n"
        "print('after')"
    )
    async with connect(server) as client:
        frames = await client.run(send, "s")
        texts = [f["output"]["text"] for f in frames if f["type"] == "output"]
        assert "".join(texts) == "a\ud800b\nafter\n", frames
        assert result_of(frames)["output"] == ["a\ud800b", "after"]
        assert result_of(await client.run("print('still fine')", "t"))["output"] == ["still fine"]
