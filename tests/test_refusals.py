"""Every execute_code gets exactly one execution_result, also when it is refused before it
runs: a client that waits for its result never waits for nothing."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .conftest import Client, GatewayServer, connect


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    specs = tmp_path_factory.mktemp("kernelspecs")
    (specs / "broken").mkdir()
    # A kernel that cannot start: its program exits at once.
    (specs / "broken" / "kernel.json").write_text(json.dumps(
        {"argv": ["/bin/false", "{connection_file}"], "display_name": "Broken", "language": "broken"}
    ))
    srv = GatewayServer(
        pool_size=1, session_grace_s=0, max_kernels=2, max_code_bytes=1000, max_message_bytes=5000,
        max_timeout=10, kernel_acquire_timeout=30, kernelspec_dirs=[str(specs)],
        languages={"python": "python3", "bash": "bash", "broken": "broken"},
    )
    yield srv
    assert not srv.stop()


async def refused(client: Client, message: dict[str, Any] | str, id: str) -> dict[str, Any]:
    """Send a message that must be refused; its error frame and its one result."""
    await client.send(message)
    frames = await client.until(lambda f: f["type"] == "execution_result" and f.get("id") == id, 60)
    mine = [f for f in frames if f.get("id") == id]
    assert mine[-1]["status"] == "error" and mine[-1]["reason"], mine
    return mine[-1]


async def test_every_refused_execute_code_gets_one_result_with_its_id(strict: GatewayServer) -> None:
    async with connect(strict) as client, httpx.AsyncClient(base_url=strict.url, timeout=60) as http:
        cases = {
            "no-code": {"type": "execute_code", "id": "no-code"},
            "bad-timeout": {"type": "execute_code", "code": "1", "timeout": -1, "id": "bad-timeout"},
            "long-timeout": {"type": "execute_code", "code": "1", "timeout": 60, "id": "long-timeout"},
            "cobol": {"type": "execute_code", "code": "1", "language": "cobol", "id": "cobol"},
            "big-code": {"type": "execute_code", "code": "x" * 2000, "id": "big-code"},
            # over max_message_bytes, but a JSON object whose id can still be read
            "big-message": json.dumps({"type": "execute_code", "code": "1", "id": "big-message", "pad": "p" * 6000}),
            "by-execution-id": {"type": "execute", "execution_id": "by-execution-id"},
        }
        results = {id: await refused(client, message, id) for id, message in cases.items()}
        assert "code" in results["no-code"]["reason"] and "timeout" in results["bad-timeout"]["reason"]
        assert "max_timeout" in results["long-timeout"]["reason"] and "cobol" in results["cobol"]["reason"]
        assert "max_code_bytes" in results["big-code"]["reason"] and "max_message_bytes" in results["big-message"]["reason"]
        assert results["by-execution-id"]["execution_id"] == "by-execution-id"

        # A kernel that fails to start, and no capacity left for another language's kernel.
        broken = await refused(client, {"type": "execute_code", "code": "1", "language": "broken", "id": "broken"}, "broken")
        assert "broken" in broken["reason"] and "start" in broken["reason"]
        other = (await http.post("/sessions", json={"language": "python"})).json()["id"]  # the second of max_kernels
        full = await refused(client, {"type": "execute_code", "code": "echo", "language": "bash", "id": "full"}, "full")
        assert "max_kernels" in full["reason"]
        assert (await http.delete(f"/sessions/{other}")).status_code == 204

        # The socket and the session work on...
        assert (await client.run("echo fine", "after", language="bash"))[-1]["output"] == ["fine"]
        await client.send({"type": "ping"})
        await client.until(lambda f: f["type"] == "pong")
        # ...and no refusal was answered twice: the replay log holds every frame the session
        # sent. (Grace is 0, so read it while this socket is open: the newer one takes over.)
        async with connect(strict, f"/ws?session_id={client.session['session_id']}&last_seq=0") as again:
            frames = [await again.recv() for _ in range(again.session["replayed"])]
    counts = Counter(f["id"] for f in frames if f["type"] == "execution_result")
    assert counts == {id: 1 for id in [*cases, "broken", "full", "after"]}, counts


# JSON may escape a lone surrogate ("\ud800"); it is no Unicode text, and UTF-8 cannot carry it.
LONE = "x = '\ud800'"


async def test_text_that_is_not_unicode_is_refused_and_the_kernel_keeps_its_state(server: GatewayServer) -> None:
    async with connect(server) as client, httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        await client.run("kept = 41")
        result = await refused(client, {"type": "execute_code", "code": LONE, "id": "lone"}, "lone")
        assert "surrogate" in result["reason"] and "U+D800" in result["reason"], result
        # An input reply of such text is refused; the code waiting for input gets the next one.
        await client.send({"type": "execute_code", "code": "got = input()\nprint(got, kept + 1)", "id": "in"})
        await client.until(lambda f: f["type"] == "input_request")
        await client.send({"type": "input_reply", "value": "\ud800"})
        error = (await client.until(lambda f: f["type"] == "error"))[-1]
        assert "surrogate" in error["message"], error
        await client.send({"type": "input_reply", "value": "fine"})
        frames = await client.until(lambda f: f["type"] == "execution_result" and f["id"] == "in")
        assert frames[-1]["output"] == ["fine 42"], frames  # the same kernel: no restart
        assert not [f for f in frames if f.get("state_lost")], frames
        body = json.dumps({"code": LONE}).encode()  # escaped: valid JSON
        response = await http.post("/execute", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400 and "surrogate" in response.json()["detail"], response.text
