"""The `/ws` protocol's published schema is the protocol: every frame the server sends, of
every kind, is one of its models exactly (no field missing, none extra)."""

from __future__ import annotations

import httpx
from pydantic import TypeAdapter

from gateway.protocol import ServerFrame

from .conftest import GatewayServer, connect

FRAMES = TypeAdapter(ServerFrame)

CODE = (
    "from IPython.display import display, clear_output\n"
    "h = display('a', display_id=True)\nh.update('b')\nclear_output(wait=True)\n"
    "print('out')\nname = input('who? ')\n1 / 0"
)


def _exactly_a_frame(frame: dict) -> str:
    model = FRAMES.validate_python(frame)
    assert model.frame() == frame, (frame, model.frame())
    return frame["type"]


async def test_every_frame_of_a_session_is_a_model_of_the_schema(server: GatewayServer) -> None:
    seen = set()
    async with connect(server) as client:
        seen.add(_exactly_a_frame(client.session))
        await client.send({"type": "execute_code", "id": "a", "code": CODE})
        frames = await client.until(lambda f: f["type"] == "input_request", 30)
        await client.send({"type": "input_reply", "value": "x"})
        frames += await client.until(lambda f: f["type"] == "execution_result", 30)
        await client.send({"type": "complete", "id": "c", "code": "import o"})
        await client.send({"type": "inspect", "id": "i", "code": "print"})
        await client.send({"type": "ping", "id": 7})
        await client.send({"type": "nonsense"})
        pending = {"completion", "inspection", "pong", "error"}  # answered in any order
        while pending:
            frames.append(await client.recv(30))
            pending.discard(frames[-1]["type"])
        await client.send({"type": "restart"})
        frames += await client.until(lambda f: f["type"] == "status" and f.get("state_lost") and f["execution_state"] == "idle", 60)
        seen.update(_exactly_a_frame(f) for f in frames)
    assert seen >= {
        "session", "output", "status", "update_display_data", "clear_output", "input_request",
        "execution_result", "completion", "inspection", "pong", "error",
    }, seen


async def test_the_schema_is_published(http: httpx.AsyncClient) -> None:
    schema = (await http.get("/ws/schema")).json()
    client_types = set(schema["client_messages"]["discriminator"]["mapping"])
    frame_types = set(schema["server_frames"]["discriminator"]["mapping"])
    assert {"execute_code", "execute", "interrupt", "restart", "input_reply", "complete", "inspect", "ack", "ping", "close_session"} == client_types
    assert {"session", "output", "status", "execution_result", "error"} <= frame_types


async def test_a_brief_result_leaves_out_what_was_streamed(server: GatewayServer) -> None:
    async with connect(server) as client:
        frames = await client.run("print('a')\nimport sys; print('b', file=sys.stderr)\n1/0", id="q", result="brief")
        result = frames[-1]
        _exactly_a_frame(result)
        assert "output" not in result and "outputs" not in result, result
        assert result["status"] == "error" and any("ZeroDivisionError" in e for e in result["errors"]), result
        streamed = [f["output"] for f in frames if f["type"] == "output"]
        assert {"name": "stdout", "output_type": "stream", "text": "a\n"} in streamed, streamed
        full = (await client.run("print('c')", id="f"))[-1]
        assert full["output"] == ["c"] and full["outputs"], full
