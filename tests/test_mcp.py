"""`/mcp` with the official MCP SDK's own client against the real server: state kept between
tool calls, a plot as an image, a file written then read by code, a time-out, bounds on what
a result carries, and calls refused without the token or on another client's session."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from mcp import ClientSession
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from .conftest import GatewayServer

ALICE, BOB = "alice-mcp-token", "bob-mcp-token"
MAX_TEXT = 5000


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[GatewayServer]:
    srv = GatewayServer(pool_size=1, session_grace_s=0, tokens={"alice": ALICE, "bob": BOB}, mcp_max_text_chars=MAX_TEXT)
    yield srv
    assert not srv.stop()


@asynccontextmanager
async def mcp_client(server: GatewayServer, token: str | None) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with create_mcp_http_client(headers=headers) as http:
        async with streamable_http_client(f"{server.url}/mcp", http_client=http) as (read, write, *_):
            async with ClientSession(read, write) as session:
                await asyncio.wait_for(session.initialize(), 30)
                yield session


@asynccontextmanager
async def session_of(server: GatewayServer) -> AsyncIterator[tuple[ClientSession, str]]:
    """Alice's MCP client and a code session of hers, closed afterwards."""
    async with mcp_client(server, ALICE) as alice:
        session_id = await opened(alice)
        try:
            yield alice, session_id
        finally:
            await call(alice, "close_session", session_id=session_id)


async def call(session: ClientSession, tool: str, **arguments: Any) -> Any:
    return await asyncio.wait_for(session.call_tool(tool, arguments), 90)


async def opened(session: ClientSession) -> str:
    result = await call(session, "open_session", language="python")
    assert not result.is_error, result
    return json.loads(result.content[0].text)["id"]


def texts(result: Any) -> str:
    return "\n".join(c.text for c in result.content if c.type == "text")


async def test_tools_are_described_for_a_model(mcp_server: GatewayServer) -> None:
    async with mcp_client(mcp_server, ALICE) as alice:
        tools = {tool.name: tool for tool in (await alice.list_tools()).tools}
        assert {"open_session", "run_code", "interrupt", "restart", "list_sessions", "close_session",
                "list_files", "read_file", "write_file"} <= set(tools)
        assert "persist" in tools["run_code"].description and "time-out" in tools["run_code"].description
        assert set(tools["run_code"].input_schema["required"]) == {"code"}


async def test_a_session_keeps_a_variable_between_calls_and_closes(mcp_server: GatewayServer) -> None:
    async with mcp_client(mcp_server, ALICE) as alice:
        session_id = await opened(alice)
        assert not (await call(alice, "run_code", session_id=session_id, code="total = 40")).is_error
        result = await call(alice, "run_code", session_id=session_id, code="print('sum'); total + 2")
        assert [c.text for c in result.content][1:] == ["sum\n", "42"]  # printed, then the value
        assert result.content[0].text.startswith("status: ok")
        resumed = json.loads((await call(alice, "open_session", session_id=session_id)).content[0].text)
        assert resumed["id"] == session_id and resumed["execution_state"] == "idle"
        assert not (await call(alice, "restart", session_id=session_id)).is_error
        lost = await call(alice, "run_code", session_id=session_id, code="total")
        assert "NameError" in texts(lost)  # a restart loses the state, as its description says
        listed = json.loads((await call(alice, "list_sessions")).content[0].text)
        assert session_id in [s["id"] for s in listed]
        assert not (await call(alice, "close_session", session_id=session_id)).is_error
        gone = await call(alice, "run_code", session_id=session_id, code="total")
        assert gone.is_error and "404" in texts(gone)


async def test_a_plot_comes_back_as_an_image_and_a_table_as_text(mcp_server: GatewayServer) -> None:
    async with session_of(mcp_server) as (alice, session_id):
        code = (
            "import pandas as pd, matplotlib.pyplot as plt\n"
            "plt.plot([1, 3, 2]); plt.show()\n"
            "pd.DataFrame({'city': ['Oslo', 'Lima'], 'temp': [4, 19]})"
        )
        result = await call(alice, "run_code", session_id=session_id, code=code)
        images = [c for c in result.content if c.type == "image"]
        assert len(images) == 1 and images[0].mime_type == "image/png"
        assert base64.b64decode(images[0].data)[:8] == b"\x89PNG\r\n\x1a\n"
        assert "Oslo" in texts(result) and "<Figure" not in texts(result)


async def test_an_uploaded_file_is_read_by_code_and_files_come_back(mcp_server: GatewayServer) -> None:
    async with session_of(mcp_server) as (alice, session_id):
        wrote = await call(alice, "write_file", session_id=session_id, path="in/data.csv", content="a,b\n1,2\n3,4\n")
        assert json.loads(wrote.content[0].text)["size"] == 12
        result = await call(alice, "run_code", session_id=session_id, code=(
            "import pandas as pd\ndf = pd.read_csv('in/data.csv')\nprint(df.b.sum())\n"
            "df.to_csv('out.csv', index=False)\nopen('blob.bin', 'wb').write(bytes([0, 255, 7]))"
        ))
        assert "6" in texts(result).split("\n")
        listing = json.loads((await call(alice, "list_files", session_id=session_id)).content[0].text)
        assert {"in", "out.csv", "blob.bin"} <= {e["name"] for e in listing["entries"]}
        assert texts(await call(alice, "read_file", session_id=session_id, path="out.csv")) == "a,b\n1,2\n3,4\n"
        blob = (await call(alice, "read_file", session_id=session_id, path="blob.bin")).content[0]
        assert blob.type == "resource" and base64.b64decode(blob.resource.blob) == bytes([0, 255, 7])
        png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(16)).decode()
        await call(alice, "write_file", session_id=session_id, path="i.png", content=png, base64_encoded=True)
        assert (await call(alice, "read_file", session_id=session_id, path="i.png")).content[0].type == "image"
        bad = await call(alice, "write_file", session_id=session_id, path="b.bin", content="not base64!", base64_encoded=True)
        assert bad.is_error and "400: content is not valid base64" in texts(bad)
        refused = await call(alice, "read_file", session_id=session_id, path="../etc/passwd")
        assert refused.is_error and "400" in texts(refused)


async def test_a_time_out_interrupts_and_keeps_the_state(mcp_server: GatewayServer) -> None:
    async with session_of(mcp_server) as (alice, session_id):
        await call(alice, "run_code", session_id=session_id, code="kept = 'yes'")
        result = await call(alice, "run_code", session_id=session_id, code="import time; time.sleep(60)", timeout=1)
        assert texts(result).startswith("status: timeout")
        again = await call(alice, "run_code", session_id=session_id, code="print(kept)")
        assert texts(again).startswith("status: ok") and "yes" in texts(again).split("\n")


async def test_an_interrupt_from_a_second_call(mcp_server: GatewayServer) -> None:
    async with session_of(mcp_server) as (alice, session_id):
        running = asyncio.create_task(call(alice, "run_code", session_id=session_id, code="import time; time.sleep(60)"))
        async with mcp_client(mcp_server, ALICE) as other:
            for _ in range(100):
                state = json.loads((await call(other, "open_session", session_id=session_id)).content[0].text)
                if state["execution_state"] == "busy":
                    break
                await asyncio.sleep(0.05)
            assert not (await call(other, "interrupt", session_id=session_id)).is_error
        result = await asyncio.wait_for(running, 30)
        assert texts(result).startswith("status: interrupted") and "KeyboardInterrupt" in texts(result)


async def test_big_output_is_cut_and_said_so(mcp_server: GatewayServer) -> None:
    async with mcp_client(mcp_server, ALICE) as alice:
        result = await call(alice, "run_code", code="print('x' * 100000)")  # a one-shot kernel
        assert sum(len(c.text) for c in result.content if c.type == "text" and "cut" not in c.text) <= MAX_TEXT
        assert "characters of output" in result.content[-1].text


async def test_refused_without_the_token_and_on_anothers_session(mcp_server: GatewayServer) -> None:
    async with mcp_client(mcp_server, ALICE) as alice:
        initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
        for token in (None, "wrong"):
            with pytest.raises(Exception) as refused:  # the SDK's client cannot even initialize
                async with mcp_client(mcp_server, token):
                    pass
            assert "error response" in repr(refused.value)
            # ...because the gateway refused it before MCP saw it:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            raw = httpx.post(f"{mcp_server.url}/mcp", json=initialize, timeout=10,
                             headers={**headers, "Accept": "application/json, text/event-stream"})
            assert raw.status_code == 401 and raw.headers["www-authenticate"] == "Bearer"
        session_id = await opened(alice)
        try:
            async with mcp_client(mcp_server, BOB) as bob:
                result = await call(bob, "run_code", session_id=session_id, code="1")
                assert result.is_error and "404" in texts(result)
                assert session_id not in texts(await call(bob, "list_sessions"))
        finally:
            await call(alice, "close_session", session_id=session_id)


async def test_a_call_the_client_gives_up_on_interrupts_its_code(mcp_server: GatewayServer) -> None:
    # The SDK's Client on the 2026 wire: a call is given up by closing its response stream.
    headers = {"Authorization": f"Bearer {ALICE}"}
    async with create_mcp_http_client(headers=headers) as http, \
            Client(streamable_http_client(f"{mcp_server.url}/mcp", http_client=http), mode="auto") as modern, \
            mcp_client(mcp_server, ALICE) as alice:
        session_id = await opened(alice)
        try:
            running = asyncio.create_task(modern.call_tool("run_code", {"session_id": session_id, "code": "import time; time.sleep(60)"}))
            await _until_state(alice, session_id, "busy")
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
            await _until_state(alice, session_id, "idle")  # interrupted, long before its 60 s
            result = await call(alice, "run_code", session_id=session_id, code="print('after')")
            assert "after" in texts(result).split("\n")
        finally:
            await call(alice, "close_session", session_id=session_id)


async def _until_state(client: ClientSession, session_id: str, wanted: str) -> dict[str, Any]:
    for _ in range(200):
        state = json.loads((await call(client, "open_session", session_id=session_id)).content[0].text)
        if state["execution_state"] == wanted:
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"the session never became {wanted}")
