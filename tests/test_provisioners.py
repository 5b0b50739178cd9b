"""The launcher seam: a kernelspec that names its own provisioner is launched by that one,
unwrapped, over the transport it chose, and the gateway serves it as any other kernel."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from kernels.environment import default_path

from .conftest import GatewayServer, connect

CONFINED = "icotes-confined-provisioner"


@pytest.fixture(scope="module")
def tcp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """Python on jupyter_client's own local provisioner (TCP, no sandbox), bash on ours."""
    specs = tmp_path_factory.mktemp("specs")
    (specs / "tcp-python").mkdir()
    (specs / "tcp-python" / "kernel.json").write_text(json.dumps({
        "argv": [str(default_path() / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python over TCP", "language": "python",
        "metadata": {"kernel_provisioner": {"provisioner_name": "local-provisioner"}},
    }))
    srv = GatewayServer(
        pool_size=1, session_grace_s=0, kernelspec_dirs=[str(specs)],
        languages={"python": "tcp-python", "bash": "bash"}, kernel_uid_base=73000,
    )
    yield srv
    assert not srv.stop()


@pytest.fixture
async def http(tcp_server: GatewayServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=tcp_server.url, timeout=60) as client:
        yield client


async def test_each_language_names_what_launches_it(http: httpx.AsyncClient) -> None:
    languages = {l["language"]: l for l in (await http.get("/languages")).json()}
    assert languages["python"]["provisioner"] == "local-provisioner"
    assert languages["bash"]["provisioner"] == CONFINED


async def test_a_kernel_of_another_provisioner_is_not_wrapped_and_speaks_tcp(http: httpx.AsyncClient) -> None:
    code = (
        "import os, json\nfrom ipykernel.kernelapp import IPKernelApp\napp = IPKernelApp.instance()\n"
        "print(json.dumps([app.transport, app.ip, os.getuid(), os.path.exists('/proc/1/cmdline') and open('/proc/1/cmdline').read().split('\\0')[0]]))"
    )
    result = (await http.post("/execute", json={"code": code})).json()
    assert result["status"] == "ok", result
    transport, ip, uid, init = json.loads(result["output"][0])
    assert (transport, ip) == ("tcp", "127.0.0.1")
    # jupyter_client's provisioner launched it as it is: the gateway's uid, the host's PID 1.
    assert uid == os.getuid() and "bwrap" not in init
    confined = (await http.post("/execute", json={"code": "id -u", "language": "bash"})).json()
    assert confined["status"] == "ok" and int(confined["output"][0]) >= 73000, confined


async def test_a_tcp_kernel_streams_takes_input_and_is_interrupted(tcp_server: GatewayServer) -> None:
    async with connect(tcp_server) as client:
        await client.send({"type": "execute_code", "id": "a", "code": "x = 41\nname = input('who? ')\nprint('hi', name)"})
        await client.until(lambda f: f.get("type") == "input_request", 30)
        await client.send({"type": "input_reply", "value": "tcp"})
        frames = await client.until(lambda f: f.get("type") == "execution_result" and f["id"] == "a", 30)
        assert frames[-1]["status"] == "ok" and "hi tcp" in "".join(frames[-1]["output"]), frames[-1]
        await client.send({"type": "execute_code", "id": "b", "code": "import time\nprint('go', flush=True)\ntime.sleep(30)"})
        await client.until(lambda f: f.get("id") == "b" and f["type"] == "output", 30)
        await client.send({"type": "interrupt", "id": "b"})
        stopped = await client.until(lambda f: f.get("type") == "execution_result" and f["id"] == "b", 20)
        assert stopped[-1]["status"] == "interrupted", stopped[-1]
        kept = await client.run("print(x + 1)", id="c")
        assert kept[-1]["output"] == ["42"], kept[-1]


async def test_a_tcp_kernel_restarts_and_its_death_is_reported(tcp_server: GatewayServer) -> None:
    async with connect(tcp_server) as client:
        await client.run("y = 1", id="a")
        await client.send({"type": "restart"})
        await client.until(lambda f: f.get("type") == "status" and f.get("execution_state") == "idle" and f.get("state_lost"), 60)
        gone = await client.run("print('y' in dir())", id="b")
        assert gone[-1]["output"] == ["False"], gone[-1]
        died = await client.run("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", id="c", wait=30)
        assert died[-1]["status"] == "died" and any("SIGKILL" in e for e in died[-1]["errors"]), died[-1]
