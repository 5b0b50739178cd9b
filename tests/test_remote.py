"""Kernels placed on another host by gateway-provisioners' DistributedProvisioner, over a real
sshd (tests/ssh_host.py): the same session, pool, interrupt, input, time-out, restart, death
and Jupyter-API paths as local kernels, over CurveZMQ, and nothing left on the host."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import websockets
import zmq
from jupyter_client.session import Session

from .conftest import GatewayServer, connect, free_port, result_of
from .ssh_host import ADDRESS, SPEC, USER, SshHost
from .test_jupyter_api import execute, stdout

WHERE = "import os, pwd, socket; print(pwd.getpwuid(os.getuid()).pw_name, os.getpid())"


def _kernel_python() -> str:
    from kernels.environment import default_path

    return str(default_path() / "bin" / "python")


@pytest.fixture(scope="module")
def ssh_host() -> Iterator[SshHost]:
    host = SshHost(_kernel_python())
    yield host
    left = host.wait_no_processes(timeout=20)
    host.stop()
    assert not left, f"processes left on the SSH host: {left}"


@pytest.fixture(scope="module")
def remote_server(ssh_host: SshHost) -> Iterator[GatewayServer]:
    srv = GatewayServer(
        env=ssh_host.gateway_env(free_port()),
        pool_size=1,  # one SSH kernel waits ready too: the pool's path
        session_grace_s=0,
        kernel_uid_base=73000,
        kernelspec_dirs=[str(ssh_host.specs)],
        languages={"python": "python3", "ssh": SPEC},
    )
    yield srv
    assert not srv.stop()


@pytest.fixture
async def ssh(remote_server: GatewayServer) -> AsyncIterator[Any]:
    async with connect(remote_server) as client:
        yield client


def _pid_on_host(frames: list[dict[str, Any]]) -> int:
    user, pid = result_of(frames)["output"][0].split()
    assert user == USER
    return int(pid)


async def _gone(pid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def test_code_runs_on_the_ssh_host_and_streams(ssh: Any, ssh_host: SshHost) -> None:
    pid = _pid_on_host(await ssh.run(WHERE, language="ssh"))
    assert psutil.Process(pid).uids().real == ssh_host.account_uid
    await ssh.send({"type": "execute_code", "code": "import time\nprint('a', flush=True)\ntime.sleep(1.5)\nprint('b')",
                    "id": "s", "language": "ssh"})
    first = await ssh.until(lambda f: f.get("id") == "s" and f["type"] == "output")
    seen_at = time.monotonic()
    assert first[-1]["output"]["text"] == "a\n"
    result = (await ssh.until(lambda f: f.get("id") == "s" and f["type"] == "execution_result"))[-1]
    assert time.monotonic() - seen_at > 1 and result["output"] == ["a", "b"]
    # the session's other language stays local, beside it
    local = result_of(await ssh.run("import os; print(os.getuid())", id="l", language="python"))
    assert int(local["output"][0]) != ssh_host.account_uid


async def test_kernel_ports_take_only_curve_clients(ssh: Any) -> None:
    """The launcher's connection file on the host: TCP with CurveZMQ keys. A client with the
    message key but without the curve keys gets nothing; with them, an answer."""
    pid = _pid_on_host(await ssh.run(WHERE, language="ssh"))
    info = _connection_file_of(pid)
    assert info["transport"] == "tcp" and info["curve_publickey"] and info["curve_secretkey"]
    assert _kernel_info_answered(info, curve=True)
    assert not _kernel_info_answered(info, curve=False)


def _connection_file_of(pid: int) -> dict[str, Any]:
    """The file the launcher of the kernel with `pid` wrote (named after its kernel id)."""
    cmdline = psutil.Process(pid).cmdline()
    kernel_id = cmdline[cmdline.index("--kernel-id") + 1]
    found = list(Path("/tmp").glob(f"kernel-{kernel_id}_*.json"))
    assert len(found) == 1, found
    return json.loads(found[0].read_text())


def _kernel_info_answered(info: dict[str, Any], curve: bool, timeout_ms: int = 2000) -> bool:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    if curve:
        sock.curve_secretkey = info["curve_secretkey"].encode()
        sock.curve_publickey = info["curve_publickey"].encode()
        sock.curve_serverkey = info["curve_publickey"].encode()
    try:
        sock.connect(f"tcp://{ADDRESS}:{info['shell_port']}")
        session = Session(key=info["key"].encode(), signature_scheme=info["signature_scheme"])
        session.send(sock, "kernel_info_request", {})
        return bool(sock.poll(timeout_ms))
    finally:
        sock.close()


async def test_interrupt_input_and_time_out(ssh: Any) -> None:
    await ssh.run("kept = 'yes'", language="ssh")
    await ssh.send({"type": "execute_code", "code": "print('go', flush=True)\nimport time\ntime.sleep(30)", "id": "long", "language": "ssh"})
    await ssh.until(lambda f: f.get("id") == "long" and f["type"] == "output")
    sent = time.monotonic()
    await ssh.send({"type": "interrupt"})
    result = (await ssh.until(lambda f: f["type"] == "execution_result" and f["id"] == "long"))[-1]
    assert result["status"] == "interrupted" and time.monotonic() - sent < 5
    await ssh.send({"type": "execute_code", "code": "print('hi', input('Name? '))", "id": "in", "language": "ssh"})
    asked = (await ssh.until(lambda f: f["type"] == "input_request"))[-1]
    assert asked["prompt"] == "Name? "
    await ssh.send({"type": "input_reply", "value": "Ada"})
    assert (await ssh.until(lambda f: f["type"] == "execution_result"))[-1]["output"] == ["hi Ada"]
    timed = result_of(await ssh.run("import time; time.sleep(30)", id="t", language="ssh", timeout=1, wait=30))
    assert timed["status"] == "timeout"
    assert result_of(await ssh.run("print(kept)", id="k", language="ssh"))["output"] == ["yes"]


async def test_restart_loses_state_and_ends_the_old_process(ssh: Any) -> None:
    before = _pid_on_host(await ssh.run(f"lost = 1\n{WHERE}", language="ssh"))
    await ssh.send({"type": "restart", "language": "ssh"})
    await ssh.until(lambda f: f["type"] == "status" and f["execution_state"] == "idle" and f.get("state_lost"), 60)
    after = await ssh.run(f"print('lost' in dir())\n{WHERE}", id="a", language="ssh")
    result = result_of(after)
    assert result["output"][0] == "False" and result["execution_count"] == 1
    assert await _gone(before), "the restarted kernel's old process is still on the host"


async def test_death_on_the_host_is_reported_and_the_session_goes_on(ssh: Any) -> None:
    pid = _pid_on_host(await ssh.run(f"x = 1\n{WHERE}", language="ssh"))
    result = result_of(await ssh.run("import os, time\nos.kill(os.getpid(), 9)\ntime.sleep(5)", "k", language="ssh"))
    assert result["status"] == "died"
    notice = await ssh.until(lambda f: f["type"] == "status" and f.get("state_lost") and f["execution_state"] == "idle")
    assert "state was lost" in notice[-1]["message"]
    assert result_of(await ssh.run("print('x' in dir())", "n", language="ssh"))["output"] == ["False"]
    assert await _gone(pid)


async def test_closing_the_session_leaves_nothing_on_the_host(remote_server: GatewayServer) -> None:
    async with connect(remote_server) as client:
        pid = _pid_on_host(await client.run(WHERE, language="ssh"))
        launcher_children = [p.pid for p in psutil.Process(pid).children(recursive=True)]
    assert await _gone(pid)
    for child in launcher_children:
        assert await _gone(child), f"the launcher's listener {child} is still on the host"


async def test_jupyter_api_runs_the_ssh_spec_and_ignores_a_clients_placement(remote_server: GatewayServer, ssh_host: SshHost) -> None:
    async with httpx.AsyncClient(base_url=remote_server.url, timeout=60) as http:
        specs = (await http.get("/api/kernelspecs")).json()["kernelspecs"]
        assert specs[SPEC]["spec"]["metadata"]["kernel_provisioner"]["provisioner_name"] == "distributed-provisioner"
        # a client may not choose the host, nor the user name the engine checks
        env = {"KERNEL_REMOTE_HOST": "127.0.0.3", "KERNEL_USERNAME": "root"}
        created = await http.post("/api/kernels", json={"name": SPEC, "env": env})
        assert created.status_code == 201, created.text
        kid = created.json()["id"]
        async with websockets.connect(f"{remote_server.ws_url}/api/kernels/{kid}/channels") as ws:
            iopub, reply = await execute(ws, "import os; print(os.environ.get('KERNEL_USERNAME'))")
            assert reply["content"]["status"] == "ok" and stdout(iopub) == "icotes\n"
            running = asyncio.create_task(execute(ws, "import time; time.sleep(30)"))
            await asyncio.sleep(1)
            assert (await http.post(f"/api/kernels/{kid}/interrupt")).status_code == 204
            _, reply = await asyncio.wait_for(running, 15)
            assert reply["content"]["ename"] == "KeyboardInterrupt"
            iopub, _ = await execute(ws, WHERE)
            pid = int(stdout(iopub).split()[1])
        assert psutil.Process(pid).uids().real == ssh_host.account_uid
        assert (await http.delete(f"/api/kernels/{kid}")).status_code == 204
        assert await _gone(pid)


async def test_files_reach_the_remote_kernels_home_through_the_kernel(remote_server: GatewayServer, ssh_host: SshHost) -> None:
    # No shared filesystem: the bytes go over the kernel's own (encrypted) channels, and the
    # kernel's process, as the SSH account, writes and reads them on its host.
    data = bytes(range(256)) * 4096  # 1 MiB: two chunks
    async with httpx.AsyncClient(base_url=remote_server.url, timeout=60) as http:
        session_id = (await http.post("/sessions", json={"language": "ssh"})).json()["id"]
        try:
            name = f"icotes-upload-{session_id[:8]}.bin"
            put = await http.put(f"/sessions/{session_id}/files/{name}", content=data)
            assert put.status_code == 201 and put.json()["size"] == len(data), put.text
            code = f"import os, pwd; print(pwd.getpwuid(os.stat({name!r}).st_uid).pw_name, len(open({name!r}, 'rb').read()), os.getcwd())"
            result = (await http.post(f"/sessions/{session_id}/execute", json={"code": code})).json()
            assert result["output"] == [f"{USER} {len(data)} {ssh_host.account_home}"]  # the account's home
            assert (await http.get(f"/sessions/{session_id}/files/{name}")).content == data
            assert name in [e["name"] for e in (await http.get(f"/sessions/{session_id}/files")).json()["entries"]]
            assert (await http.delete(f"/sessions/{session_id}/files/{name}")).status_code == 204
        finally:
            await http.delete(f"/sessions/{session_id}")


async def test_a_spec_that_cannot_be_encrypted_is_refused(tmp_path: Path, ssh_host: SshHost) -> None:
    """Required encryption and a spec that does not declare curve: the launch fails and
    says why, before anything runs on the host."""
    spec_dir = tmp_path / "plain_ssh"
    spec_dir.mkdir()
    spec = json.loads((ssh_host.specs / SPEC / "kernel.json").read_text())
    spec["metadata"].pop("supported_encryption")
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    srv = GatewayServer(env=ssh_host.gateway_env(free_port()), pool_size=0, kernel_uid_base=73500,
                        kernelspec_dirs=[str(tmp_path)], languages={"python": "python3", "plain": "plain_ssh"})
    try:
        async with connect(srv) as client:
            result = result_of(await client.run("1", language="plain"))
        assert result["status"] == "error"
        assert "supported_encryption" in result["reason"], result["reason"]
    finally:
        assert not srv.stop()
