"""A session's files over REST (gateway/files.py, kernels/files.py): upload, run, download,
delete, against a real server and real confined kernels, and every way out of the home that
a kernel's own code can build refused: `..`, absolute paths, links it makes, fifos, and a link
swapped in while the gateway walks the path."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import websockets

from .conftest import GatewayServer

ALICE, BOB = "alice-files-token", "bob-files-token"
HOME_BYTES = 24 * 2**20
UPLOAD_LIMIT = 12 * 2**20


@pytest.fixture(scope="module")
def files_server() -> Iterator[GatewayServer]:
    srv = GatewayServer(
        pool_size=1, session_grace_s=0, tokens={"alice": ALICE, "bob": BOB},
        scratch_bytes=HOME_BYTES, max_upload_bytes=UPLOAD_LIMIT, kernel_uid_base=74000,
    )
    yield srv
    assert not srv.stop()


@pytest.fixture
async def alice(files_server: GatewayServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=files_server.url, timeout=60, headers={"Authorization": f"Bearer {ALICE}"}) as client:
        yield client


@pytest.fixture
async def session(alice: httpx.AsyncClient) -> AsyncIterator[str]:
    response = await alice.post("/sessions", json={"language": "python"})
    assert response.status_code == 201, response.text
    session_id = response.json()["id"]
    yield session_id
    assert (await alice.delete(f"/sessions/{session_id}")).status_code == 204


async def run(client: httpx.AsyncClient, session_id: str, code: str) -> dict[str, Any]:
    response = await client.post(f"/sessions/{session_id}/execute", json={"code": code})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"] == "ok", result
    return result


async def names(client: httpx.AsyncClient, session_id: str, path: str = "") -> list[str]:
    response = await client.get(f"/sessions/{session_id}/files", params={"path": path})
    assert response.status_code == 200, response.text
    return [entry["name"] for entry in response.json()["entries"]]


async def test_upload_run_download(alice: httpx.AsyncClient, session: str) -> None:
    csv = b"x,y\n1,2\n3,5\n"
    put = await alice.put(f"/sessions/{session}/files/data/points.csv", content=csv)
    assert put.status_code == 201, put.text
    assert put.json()["name"] == "points.csv" and put.json()["size"] == len(csv) and put.json()["type"] == "file"
    code = (
        "import os, hashlib, pandas as pd, matplotlib\nmatplotlib.use('Agg')\n"
        "df = pd.read_csv('data/points.csv')\nax = df.plot(x='x', y='y')\n"
        "os.makedirs('out', exist_ok=True)\nax.figure.savefig('out/plot.png')\n"
        "print(int(df.y.sum()), os.stat('data/points.csv').st_uid == os.getuid(), oct(os.stat('data/points.csv').st_mode & 0o777))\n"
        "print(hashlib.sha256(open('out/plot.png', 'rb').read()).hexdigest())"
    )
    total, owned, mode = (await run(alice, session, code))["output"][0].split()
    assert (total, owned, mode) == ("7", "True", "0o644")  # read by code; the kernel's uid owns it
    listing = (await alice.get(f"/sessions/{session}/files", params={"path": "out"})).json()
    assert listing["path"] == "out" and [e["name"] for e in listing["entries"]] == ["plot.png"]
    digest = (await run(alice, session, "print(hashlib.sha256(open('out/plot.png','rb').read()).hexdigest())"))["output"][0]
    got = await alice.get(f"/sessions/{session}/files/out/plot.png")
    assert got.status_code == 200
    assert hashlib.sha256(got.content).hexdigest() == digest and got.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert got.headers["content-type"] == "image/png"
    assert got.headers["content-disposition"].startswith("attachment;")
    assert got.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in got.headers["content-security-policy"]
    assert int(got.headers["content-length"]) == listing["entries"][0]["size"] == len(got.content)


async def test_a_large_file_round_trips_while_code_runs(alice: httpx.AsyncClient, session: str) -> None:
    data = bytes(range(256)) * (8 * 2**20 // 256)  # 8 MiB, in many chunks
    running = asyncio.create_task(alice.post(f"/sessions/{session}/execute", json={"code": "import time; time.sleep(20)"}))
    try:
        await _until_busy(alice, session)
        put = await alice.put(f"/sessions/{session}/files/big.bin", content=data)
        assert put.status_code == 201 and put.json()["size"] == len(data)
        got = await alice.get(f"/sessions/{session}/files/big.bin")
        assert got.content == data
        # Both answered beside the running code, not after it.
        assert (await alice.get(f"/sessions/{session}")).json()["execution_state"] == "busy"
        assert not running.done()
    finally:
        await alice.post(f"/sessions/{session}/interrupt")
        assert (await asyncio.wait_for(running, 30)).json()["status"] == "interrupted"


async def _until_busy(client: httpx.AsyncClient, session_id: str) -> None:
    for _ in range(200):
        if (await client.get(f"/sessions/{session_id}")).json()["execution_state"] == "busy":
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the session never became busy")


async def test_a_cut_upload_leaves_no_file_and_the_old_one_whole(files_server: GatewayServer, alice: httpx.AsyncClient, session: str) -> None:
    assert (await alice.put(f"/sessions/{session}/files/keep.txt", content=b"original")).status_code == 201
    for name in ("keep.txt", "new.txt"):
        with socket.create_connection(("127.0.0.1", files_server.port), timeout=10) as raw:
            head = (
                f"PUT /sessions/{session}/files/{name} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {ALICE}\r\nContent-Length: {2 * 2**20}\r\n\r\n"
            )
            raw.sendall(head.encode() + b"x" * (700 * 1024))  # then the client goes away
    await asyncio.sleep(1)  # the gateway sees the disconnect and tells the kernel
    code = "import os; print(open('keep.txt').read(), sorted(os.listdir('.')))"
    output = (await run(alice, session, code))["output"][0]
    assert output.startswith("original ") and "new.txt" not in output and ".upload" not in output


async def test_paths_out_of_the_home_are_refused(alice: httpx.AsyncClient, session: str) -> None:
    base = f"/sessions/{session}/files"
    for path, status in [("a/%2e%2e/%2e%2e/etc/passwd", 400), ("%2Fetc%2Fpasswd", 400), ("x%00y", 400)]:
        response = await alice.get(f"{base}/{path}")
        assert response.status_code == status, (path, response.text)
        assert response.json()["detail"]
    assert (await alice.get(base, params={"path": "../.."})).status_code == 400
    assert (await alice.put(f"{base}/%2e%2e/escape.txt", content=b"x")).status_code == 400
    # Links, a fifo and a directory, made by the kernel's own code, on purpose.
    await run(alice, session, (
        "import os\nos.symlink('/etc/passwd', 'passwd')\nos.symlink('/tmp', 'tmp')\n"
        "os.symlink('/dev/zero', 'zero')\nos.mkfifo('fifo')\nos.mkdir('dir')\nopen('/tmp/outside', 'w').write('secret')"
    ))
    for path in ("passwd", "tmp/outside", "zero", "fifo"):
        response = await asyncio.wait_for(alice.get(f"{base}/{path}"), 10)  # a fifo must not hang it
        assert response.status_code == 403, (path, response.text)
    for path in ("passwd", "tmp/written", "fifo"):
        assert (await alice.put(f"{base}/{path}", content=b"x")).status_code == 403, path
    assert (await alice.get(base, params={"path": "tmp"})).status_code == 403
    assert (await alice.get(f"{base}/dir")).status_code == 409
    assert (await alice.get(f"{base}/missing")).status_code == 404
    kinds = {e["name"]: e["type"] for e in (await alice.get(base)).json()["entries"]}
    assert kinds["passwd"] == "symlink" and kinds["fifo"] == "other" and kinds["dir"] == "directory"
    output = (await run(alice, session, "print(os.path.exists('/tmp/written'), os.path.islink('passwd'))"))["output"]
    assert output == ["False True"]  # nothing was written through the link, which is still a link


async def test_a_link_swapped_in_while_the_path_is_walked_gains_nothing(alice: httpx.AsyncClient, session: str) -> None:
    # The kernel flips `d` between a directory and a link to /tmp as fast as it can, while
    # files are read from and written to `d/...`: a check-then-use would sometimes follow it.
    await run(alice, session, (
        "import os, threading\nopen('/tmp/secret', 'w').write('outside')\n"
        "os.mkdir('real'); open('real/secret', 'w').write('inside')\nos.symlink('/tmp', 'link')\n"
        "stop, flips = threading.Event(), [0]\n"
        "def flip():\n"
        "    while not stop.is_set():\n"
        "        for name in ('real', 'link'):\n"
        "            try:\n"
        "                os.rename(name, 'd'); os.rename('d', name); flips[0] += 1\n"
        "            except OSError:\n"
        "                pass  # an upload made `d` meanwhile: it is the gateway's now\n"
        "threading.Thread(target=flip, daemon=True).start()"
    ))
    statuses: set[int] = set()
    try:
        for i in range(150):
            got = await alice.get(f"/sessions/{session}/files/d/secret")
            statuses.add(got.status_code)
            assert got.status_code != 200 or got.content == b"inside"
            put = await alice.put(f"/sessions/{session}/files/d/w{i}", content=b"x")
            statuses.add(put.status_code)
    finally:
        flips = (await run(alice, session, "stop.set(); print(flips[0])"))["output"][0]
    assert int(flips) > 300  # the race was on all along
    assert statuses <= {200, 201, 403, 404, 409}, statuses  # answers or refusals, never an error
    assert 403 in statuses  # the link was met, and refused
    output = (await run(alice, session, "print(sorted(n for n in os.listdir('/tmp') if n.startswith('w')))"))["output"]
    assert output == ["[]"]  # not one upload landed outside the home


async def test_delete(alice: httpx.AsyncClient, session: str) -> None:
    base = f"/sessions/{session}/files"
    for path in ("dir/a.txt", "b.txt"):
        assert (await alice.put(f"{base}/{path}", content=b"x")).status_code == 201
    await run(alice, session, "import os; os.symlink('b.txt', 'link'); os.mkdir('empty')")
    assert (await alice.delete(f"{base}/dir")).status_code == 409  # not empty
    assert (await alice.delete(f"{base}/link")).status_code == 204  # the link, not b.txt
    assert (await alice.delete(f"{base}/empty")).status_code == 204
    assert (await alice.delete(f"{base}/dir/a.txt")).status_code == 204
    assert (await alice.delete(f"{base}/nothing")).status_code == 404
    assert (await alice.delete(f"{base}/")).status_code == 409  # the home itself
    assert {"b.txt", "dir"} <= set(await names(alice, session)) and not {"link", "empty"} & set(await names(alice, session))
    assert await names(alice, session, "dir") == []


async def test_the_homes_size_and_the_upload_limit_hold(alice: httpx.AsyncClient, session: str) -> None:
    base = f"/sessions/{session}/files"
    await run(alice, session, f"open('filler', 'wb').write(bytes({HOME_BYTES - 8 * 2**20}))")
    full = await alice.put(f"{base}/full.bin", content=b"\0" * (UPLOAD_LIMIT - 2**20))
    assert full.status_code == 413 and "room" in full.json()["detail"]
    assert (await alice.delete(f"{base}/filler")).status_code == 204
    too_big = await alice.put(f"{base}/big.bin", content=b"\0" * (UPLOAD_LIMIT + 1))
    assert too_big.status_code == 413 and "max_upload_bytes" in too_big.json()["detail"]

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted on the way
        for _ in range(UPLOAD_LIMIT // 2**20 + 1):
            yield b"\0" * 2**20

    streamed = await alice.put(f"{base}/streamed.bin", content=chunked())
    assert streamed.status_code == 413 and "max_upload_bytes" in streamed.json()["detail"]
    left = set(await names(alice, session))
    assert not {"full.bin", "big.bin", "streamed.bin"} & left and not any(".upload" in n for n in left)
    # And the home still takes what fits.
    assert (await alice.put(f"{base}/fits.bin", content=b"\0" * 2**20)).status_code == 201


async def test_another_client_cannot_reach_the_files(files_server: GatewayServer, alice: httpx.AsyncClient, session: str) -> None:
    async with httpx.AsyncClient(base_url=files_server.url, timeout=30) as anonymous:
        assert (await anonymous.get(f"/sessions/{session}/files")).status_code == 401
        bob = {"Authorization": f"Bearer {BOB}"}
        assert (await anonymous.get(f"/sessions/{session}/files", headers=bob)).status_code == 404
        assert (await anonymous.put(f"/sessions/{session}/files/x", content=b"x", headers=bob)).status_code == 404
    assert "x" not in await names(alice, session)


async def test_a_bash_session_says_where_its_files_are(alice: httpx.AsyncClient) -> None:
    session_id = (await alice.post("/sessions", json={"language": "bash"})).json()["id"]
    try:
        refused = await alice.get(f"/sessions/{session_id}/files")
        assert refused.status_code == 409 and "language=python" in refused.json()["detail"]
        # The session's Python kernel (started for it) has a home of its own.
        assert (await alice.put(f"/sessions/{session_id}/files/a.txt", params={"language": "python"}, content=b"x")).status_code == 201
        listing = await alice.get(f"/sessions/{session_id}/files", params={"language": "python"})
        assert "a.txt" in [e["name"] for e in listing.json()["entries"]]
    finally:
        await alice.delete(f"/sessions/{session_id}")


async def test_jupyter_clients_of_the_kernel_see_nothing_of_a_transfer(files_server: GatewayServer, alice: httpx.AsyncClient) -> None:
    kernel_id = (await alice.post("/api/kernels", json={"name": "python3"})).json()["id"]
    url = f"{files_server.ws_url}/api/kernels/{kernel_id}/channels?token={ALICE}"
    try:
        async with websockets.connect(url, open_timeout=30, max_size=2**26) as ws:
            # A Jupyter kernel's id is a session id: its files are reached the same way.
            assert (await alice.put(f"/sessions/{kernel_id}/files/j.bin", content=b"j" * 2**20)).status_code == 201
            assert (await alice.get(f"/sessions/{kernel_id}/files/j.bin")).content == b"j" * 2**20
            msg_id = "after-the-transfer"
            await ws.send(json.dumps({
                "header": {"msg_id": msg_id, "msg_type": "kernel_info_request", "username": "", "session": "s", "version": "5.3", "date": ""},
                "parent_header": {}, "metadata": {}, "content": {}, "channel": "shell",
            }))
            seen = []
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 30))
                seen.append(msg["msg_type"])
                if msg["msg_type"] == "kernel_info_reply":
                    break
            assert not [t for t in seen if t.startswith("comm")], seen
    finally:
        await alice.delete(f"/api/kernels/{kernel_id}")


async def test_exec_d_kernels_have_the_same_files() -> None:
    # The fork template is the default; a kernel exec'd through the confinement chain has
    # the same file channel (its warm-up cell registers it).
    srv = GatewayServer(pool_size=1, session_grace_s=0, fork_kernels=False, kernel_uid_base=74500)
    try:
        async with httpx.AsyncClient(base_url=srv.url, timeout=60) as client:
            forks = srv.health()["sandbox"]["forked_kernels"]
            assert forks["possible"] is False and forks["templates"] == {}, forks  # exec'd, then
            session_id = (await client.post("/sessions", json={"language": "python"})).json()["id"]
            assert (await client.put(f"/sessions/{session_id}/files/e.txt", content=b"exec'd")).status_code == 201
            code = "import os; print(open('e.txt').read(), os.stat('e.txt').st_uid == os.getuid() != 0)"
            assert (await run(client, session_id, code))["output"] == ["exec'd True"]
            assert (await client.get(f"/sessions/{session_id}/files/e.txt")).content == b"exec'd"
    finally:
        assert not srv.stop()


async def test_a_kernel_answering_for_the_channel_gets_a_clear_refusal(alice: httpx.AsyncClient, session: str) -> None:
    # The user's code can replace the kernel's side: what it answers is checked, and a
    # download never carries more than it announced.
    await run(alice, session, (
        "from IPython import get_ipython\n"
        "def forged(comm, msg):\n"
        "    op = msg['content']['data']['op']\n"
        "    if op == 'list':\n"
        "        comm.send({'ok': True, 'path': '', 'entries': [{'name': 'x', 'type': 'file', 'size': -1, 'modified': 1e30}]})\n"
        "        comm.close()\n"
        "    else:\n"
        "        comm.send({'ok': True, 'info': {'name': 'f', 'type': 'file', 'size': 5, 'modified': 0}})\n"
        "        comm.on_msg(lambda m: comm.send({'ok': True, 'eof': True}, buffers=[b'y' * 100000]))\n"
        "get_ipython().kernel.comm_manager.register_target('icotes.files', forged)"
    ))
    try:
        listing = await alice.get(f"/sessions/{session}/files")
        assert listing.status_code == 409 and "malformed" in listing.json()["detail"]
        got = await alice.get(f"/sessions/{session}/files/anything")
        assert got.status_code == 200 and got.content == b"yyyyy"
    finally:
        await run(alice, session, (
            "import sys\nget_ipython().kernel.comm_manager.register_target('icotes.files', sys.modules['icotes_files']._opened)"
        ))
    assert (await alice.get(f"/sessions/{session}/files")).status_code == 200
